"""Build jobs from operator/graph inputs: fresh ids, sealed secrets, rule checks.

Everything secret is sealed here, before a job object exists, so no plaintext
secret can reach Redis by any later path. Each value is sealed together with its
binding (:mod:`contracts.sealing`: project, repo, name), so it cannot be re-aimed.
The job's signed expiry is stamped at submit, on the Redis clock (client.submit).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import msgspec

from contracts import DeployJob, ProvisionJob, RuleError, Target, check_job
from contracts.rules import shown
from contracts.sealing import (
    GITHUB_TOKEN,
    SecretBinding,
    bound_plaintext,
    deploy_binding,
    provision_binding,
)
from deploystream.errors import FieldError
from deploystream.keys import OrchestratorKeys


def new_request_id() -> str:
    return uuid.uuid4().hex


# What each field allows, in words (the schema's patterns, for people).
ALLOWED: dict[str, str] = {
    "project_name": "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "repo": "a git URL of at most 2048 characters",
    "ref": "a branch, tag or commit: up to 200 letters, digits, '.', '_', '/' or '-', "
    "starting with a letter or digit",
    "target.host": "a host name or an IP address",
    "target.user": "a user name: lower-case letters, digits, '_' or '-' (up to 32)",
    "target.port": "a port from 1 to 65535",
    "service_port": "a port from 1 to 65535",
    "playbook": "a playbook name: 1 to 64 letters, digits, '_' or '-'",
    "idempotency_key": "at most 200 characters",
    "timeout_s": "1 to 86400 seconds",
    "server_handle": "1 to 200 characters",
    "health_path": "a path starting with '/': letters, digits, '.', '_', '/' or '-'",
    "request_id": "up to 128 letters, digits, '_', '.' or '-'",
    "serial": "N or N% (N from 1 to 9999)",
    "max_fail_percent": "a percentage from 0 to 100",
}
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def _field_error(
    exc: msgspec.ValidationError, fields: dict[str, Any], prefix: str = ""
) -> FieldError:
    """A schema error as the field it is about, its value and what is allowed, in words."""
    message = str(exc)
    found = _AT_PATH.search(message)
    inner = found.group(1) if found else ""
    value: Any = fields
    for part in inner.split(".") if inner else ():
        value = value.get(part) if isinstance(value, dict) else None
    path = prefix + inner
    allowed = ALLOWED.get(path)
    if allowed is None or value is None or isinstance(value, dict | list):
        return FieldError(path or "job", message[: found.start()] if found else message)
    return FieldError(path, f"{shown(value)} is not allowed; use {allowed}")


def _rule_error(exc: RuleError) -> FieldError:
    field, sep, detail = str(exc).partition(": ")
    return FieldError(field, detail) if sep else FieldError("job", str(exc))


def _target(host: str, port: int = 22, user: str | None = None) -> Target:
    fields = {"host": host, "port": port, "user": user}
    try:
        return msgspec.convert(fields, Target)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, fields, "target.") from exc


# (host, port, user) of a ``--host [USER@]HOST[:PORT]``
HostSpec = tuple[str, int, str | None]


def _rollout(
    extra_hosts: list[HostSpec] | None, serial: str | None, max_fail_percent: int | None
) -> dict[str, Any]:
    """The run's other hosts (checked as ``--host`` is) and its rolling settings."""
    out: dict[str, Any] = {
        "hosts": [msgspec.to_builtins(_target(*spec)) for spec in extra_hosts or []]
    }
    if serial is not None:
        out["serial"] = serial
    if max_fail_percent is not None:
        out["max_fail_percent"] = max_fail_percent
    return out


def _seal(keys: OrchestratorKeys, binding: SecretBinding, value: str) -> str:
    return keys.seal(bound_plaintext(binding, value))


def _finish(job_type: type[Any], fields: dict[str, Any]) -> Any:
    try:
        job = msgspec.convert(fields, job_type)
        check_job(job)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, fields) from exc
    except RuleError as exc:
        raise _rule_error(exc) from exc
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
    extra_hosts: list[HostSpec] | None = None,
    serial: str | None = None,
    max_fail_percent: int | None = None,
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
            **{
                k: _seal(keys, deploy_binding(project_name, repo, k), v)
                for k, v in (secrets or {}).items()
            },
        },
        "project_name": project_name,
        "repo": repo,
        "project_id": project_id,
        "ref": ref,
        "service_port": service_port,
        "modules": modules or [],
        "env": env or {},
        "github_token": _seal(keys, deploy_binding(project_name, repo, GITHUB_TOKEN), github_token)
        if github_token
        else None,
        "health_path": health_path,
        **_rollout(extra_hosts, serial, max_fail_percent),
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
    extra_hosts: list[HostSpec] | None = None,
    serial: str | None = None,
    max_fail_percent: int | None = None,
    accept_new_host_key: bool = False,
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
        "secrets": {
            k: _seal(keys, provision_binding(server_handle, k), v)
            for k, v in (secrets or {}).items()
        },
        "server_handle": server_handle,
        "force_reinstall": force_reinstall,
        "is_recovery": is_recovery,
        "accept_new_host_key": accept_new_host_key,
        **_rollout(extra_hosts, serial, max_fail_percent),
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
        expires_at=None,  # stamped anew at submit
    )
