"""Build jobs from operator/graph inputs: fresh ids, sealed secrets, rule checks.

Everything secret is sealed here, before a job object exists, so no plaintext
secret can reach Redis by any later path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from contracts import DeployJob, ProvisionJob, RuleError, Target, check_job
from deploystream.errors import BadInputError
from deploystream.keys import OrchestratorKeys


def new_request_id() -> str:
    return uuid.uuid4().hex


def _target(host: str, port: int = 22, user: str | None = None) -> Target:
    try:
        return msgspec.convert({"host": host, "port": port, "user": user}, Target)
    except msgspec.ValidationError as exc:
        raise BadInputError(f"invalid target host {host!r}: {exc}") from exc


def _finish(job_type: type[Any], fields: dict[str, Any]) -> Any:
    try:
        job = msgspec.convert(fields, job_type)
        check_job(job)
    except msgspec.ValidationError as exc:
        raise BadInputError(f"invalid job: {exc}") from exc
    except RuleError as exc:
        raise BadInputError(str(exc)) from exc
    return job


def build_deploy_job(
    keys: OrchestratorKeys,
    *,
    project_name: str,
    repo: str,
    ref: str = "main",
    host: str = "localhost",
    ssh_port: int = 22,
    ssh_user: str | None = None,
    service_port: int = 8000,
    project_id: str | None = None,
    env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    extra_vars: dict[str, Any] | None = None,
    modules: list[str] | None = None,
    playbook: str = "deploy_service",
    timeout_s: int = 900,
    idempotency_key: str | None = None,
    github_token: str | None = None,
    health_path: str = "/health",
    request_id: str | None = None,
    sealed_secrets: dict[str, str] | None = None,
) -> DeployJob:
    fields: dict[str, Any] = {
        "kind": "deploy",
        "request_id": request_id or new_request_id(),
        "submitted_at": time.time(),
        "playbook": playbook,
        "target": msgspec.to_builtins(_target(host, ssh_port, ssh_user)),
        "idempotency_key": idempotency_key,
        "timeout_s": timeout_s,
        "extra_vars": extra_vars or {},
        # Values the platform sealed already pass through; plaintext is sealed here.
        "secrets": {
            **(sealed_secrets or {}),
            **{k: keys.seal(v) for k, v in (secrets or {}).items()},
        },
        "project_name": project_name,
        "repo": repo,
        "project_id": project_id,
        "ref": ref,
        "service_port": service_port,
        "modules": modules or [],
        "env": env or {},
        "github_token": keys.seal(github_token) if github_token else None,
        "health_path": health_path,
    }
    job: DeployJob = _finish(DeployJob, fields)
    return job


def build_provision_job(
    keys: OrchestratorKeys,
    *,
    server_handle: str,
    host: str = "localhost",
    ssh_port: int = 22,
    ssh_user: str | None = None,
    extra_vars: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    playbook: str = "provision_server",
    timeout_s: int = 1800,
    force_reinstall: bool = False,
    is_recovery: bool = False,
    idempotency_key: str | None = None,
    request_id: str | None = None,
) -> ProvisionJob:
    fields: dict[str, Any] = {
        "kind": "provision",
        "request_id": request_id or new_request_id(),
        "submitted_at": time.time(),
        "playbook": playbook,
        "target": msgspec.to_builtins(_target(host, ssh_port, ssh_user)),
        "idempotency_key": idempotency_key,
        "timeout_s": timeout_s,
        "extra_vars": extra_vars or {},
        "secrets": {k: keys.seal(v) for k, v in (secrets or {}).items()},
        "server_handle": server_handle,
        "force_reinstall": force_reinstall,
        "is_recovery": is_recovery,
    }
    job: ProvisionJob = _finish(ProvisionJob, fields)
    return job


def as_retry(job: DeployJob | ProvisionJob, *, limit: list[str] | None = None) -> Any:
    """The same job as a new request linked by ``retry_of`` (secrets stay sealed)."""
    return msgspec.structs.replace(
        job,
        request_id=new_request_id(),
        submitted_at=time.time(),
        attempt=1,
        retry_of=job.request_id,
        idempotency_key=None,
        limit=limit if limit is not None else job.limit,
    )
