"""``prepare``: validate the request, fill gaps from the platform API, build the job.

The job is built (and its secrets and GitHub token sealed) here, so the state that
is checkpointed next holds only ciphertext, and a resumed run can submit or tail
without the plaintext it no longer has. Any problem ends the run with a clear
error in state (``outcome`` ``bad_input`` or ``unavailable``) and nothing submitted.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from langgraph.runtime import Runtime

from contracts.rules import token_applies
from deploystream.errors import BadInputError, InfrastructureError
from deploystream.keys import OrchestratorKeys
from orchestrator.errors import GithubError, PlatformApiError, PlatformApiRejected
from orchestrator.github_secrets import GithubSecrets, infer_github_repo
from orchestrator.job_builder import build_deploy_job
from orchestrator.platform_api import PlatformApi, ProjectInfo
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployContext, DeployState, ProjectRef, project_id_of

log = structlog.get_logger(__name__)

# State keys copied into build_deploy_job when the caller set them.
_JOB_FIELDS = (
    "ref",
    "host",
    "ssh_port",
    "ssh_user",
    "extra_hosts",
    "serial",
    "max_fail_percent",
    "service_port",
    "env",
    "extra_vars",
    "modules",
    "playbook",
    "timeout_s",
    "health_path",
)


class PrepareNode:
    def __init__(
        self,
        keys: OrchestratorKeys,
        settings: OrchestratorSettings,
        platform_api: PlatformApi | None,
        github: GithubSecrets | None,
    ) -> None:
        self._keys = keys
        self._settings = settings
        self._api = platform_api
        self._github = github

    async def __call__(self, state: DeployState, runtime: Runtime[DeployContext]) -> dict[str, Any]:
        if state.get("job"):
            return {}  # prepared by an earlier pass, or given built (a retry)
        context = runtime.context or DeployContext()
        try:
            return await self._prepare(state, context)
        except (BadInputError, PlatformApiRejected) as exc:
            return _rejected("bad_input", str(exc), state)
        except GithubError as exc:
            kind = "unavailable" if isinstance(exc, InfrastructureError) else "bad_input"
            return _rejected(kind, f"GitHub token for cloning: {exc}", state)
        except (InfrastructureError, PlatformApiError) as exc:
            return _rejected("unavailable", str(exc), state)

    async def _prepare(self, state: DeployState, context: DeployContext) -> dict[str, Any]:
        request_id = state.get("request_id")
        if not request_id:
            raise BadInputError("request_id is missing (it is the graph's thread id)")
        missing = sorted(set(state.get("secret_names") or []) - set(context.secrets))
        if missing:
            raise BadInputError(
                f"this run's secrets ({', '.join(missing)}) are not available (a resumed "
                f"run cannot recover them); start a new deploy"
            )
        project: ProjectRef = dict(state.get("project") or {})  # type: ignore[assignment]
        project_id = project_id_of(state)
        info = ProjectInfo(id=project_id or "")
        if project_id and self._api is not None:
            info = await self._api.get_project(project_id)
        name = project.get("name") or info.name
        repo = state.get("repo") or info.repo
        if not name:
            raise BadInputError(
                "project name is required (give a name, or a project id the platform API knows)"
            )
        if not repo:
            raise BadInputError(f"no repository for project {name!r} (give the git URL)")

        fields: dict[str, Any] = {k: state[k] for k in _JOB_FIELDS if state.get(k) is not None}  # type: ignore[literal-required]
        for key, value in (
            ("ref", info.ref),
            ("host", info.host),
            ("service_port", info.service_port),
            ("modules", info.modules or None),
        ):
            if key not in fields and value is not None:
                fields[key] = value
        if "host" not in fields and info.servers:  # the project's servers, when none given
            (fields["host"], fields["ssh_port"], fields["ssh_user"]), *rest = info.servers
            fields["extra_hosts"] = [list(server) for server in rest]
        if "service_port" not in fields:
            raise BadInputError(
                f"no service port for project {name!r} (give --service-port, or a project id "
                "the platform API knows)"
            )
        github_repo = (
            state.get("github_repo")
            or info.github_repo
            or self._settings.github_repo
            or infer_github_repo(repo)
        )
        token = (
            await self._clone_token(github_repo)
            if token_applies(repo, self._settings.github_api_url)
            else None
        )
        job = build_deploy_job(
            self._keys,
            project_name=name,
            repo=repo,
            project_id=project_id,
            secrets=dict(context.secrets),
            sealed_secrets=dict(state.get("sealed_secrets") or {}),
            github_token=token,
            idempotency_key=state.get("idempotency_key") or request_id,
            request_id=request_id,
            **fields,
        )
        log.info(
            "deploy.prepared",
            request_id=request_id,
            project=name,
            host=job.target.host,
            github_repo=github_repo,
            secrets=sorted(job.secrets),
            github_token=token is not None,
        )
        return {
            "project": {"id": project_id, "name": name},
            "repo": repo,
            "ref": job.ref,
            "host": job.target.host,
            "ssh_port": job.target.port,
            "ssh_user": job.target.user,
            "extra_hosts": [[t.host, t.port, t.user] for t in job.hosts],
            "service_port": job.service_port,
            "modules": list(job.modules),
            "timeout_s": job.timeout_s,
            "github_repo": github_repo,
            "runtime": state.get("runtime") or info.runtime,
            "secret_names": sorted(job.secrets),
            "sealed_secrets": {},
            "job": msgspec.to_builtins(job),
        }

    async def _clone_token(self, github_repo: str | None) -> str | None:
        if self._github is None:
            return None
        if self._settings.github_token:
            return await self._github.clone_token(github_repo)
        if github_repo is None:
            # An App token is per repository; without one the clone goes unauthenticated.
            log.warning("deploy.no_github_repo", reason="GitHub App configured, repo unknown")
            return None
        return await self._github.clone_token(github_repo)


def _rejected(outcome: str, message: str, state: DeployState) -> dict[str, Any]:
    log.warning("deploy.not_submitted", request_id=state.get("request_id"), error=message)
    return {"outcome": outcome, "errors": [f"nothing submitted: {message}"]}
