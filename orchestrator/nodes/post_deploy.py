"""``post_deploy`` (after ``success``) and ``report_failure`` (after anything else).

Post-deploy has three steps, each with a recorded outcome: the service-deployment
record, the repository's GitHub Actions secrets, the project status ``active``. A
step whose integration is not configured is ``skipped``; a step that fails is
``failed`` with the reason, added to ``errors``, and turns the run's outcome into
``post_deploy_failed``: never silently ignored. Steps are independent, so one
failure does not hide the others' results.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from deploystream.errors import DeploystreamError
from orchestrator.github_secrets import GithubSecrets
from orchestrator.platform_api import PlatformApi
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import (
    DeployState,
    StepOutcome,
    job_of,
    project_id_of,
    step,
)

log = structlog.get_logger(__name__)

RECORD = "deployment_record"
CI_SECRETS = "github_secrets"
STATUS = "project_status"


class PostDeployNode:
    def __init__(
        self,
        settings: OrchestratorSettings,
        platform_api: PlatformApi | None,
        github: GithubSecrets | None,
    ) -> None:
        self._settings = settings
        self._api = platform_api
        self._github = github

    async def __call__(self, state: DeployState) -> dict[str, Any]:
        outcomes = [
            await _run(RECORD, state, lambda: self._record(state)),
            await _run(CI_SECRETS, state, lambda: self._ci_secrets(state)),
            await _run(STATUS, state, lambda: self._status(state)),
        ]
        failed = [o for o in outcomes if o["status"] == "failed"]
        return {
            "post_deploy": outcomes,
            "outcome": "post_deploy_failed" if failed else "success",
            "errors": [f"post-deploy step {o['name']} failed: {o['detail']}" for o in failed],
        }

    def project_path(self, state: DeployState) -> str:
        reported = (state.get("result") or {}).get("project_path")
        if isinstance(reported, str) and reported:
            return reported
        return f"{self._settings.apps_root.rstrip('/')}/{job_of(state).project_name}"

    def deploy_user(self, state: DeployState) -> str:
        return state.get("ssh_user") or self._settings.deploy_user

    async def _record(self, state: DeployState) -> StepOutcome:
        project_id = project_id_of(state)
        if self._api is None:
            return step(RECORD, "skipped", "platform API not configured")
        if project_id is None:
            return step(RECORD, "skipped", "no project id")
        job = job_of(state)
        result = state.get("result") or {}
        runtime = result.get("runtime") or state.get("runtime")
        record = await self._api.create_service_deployment(
            project_id=project_id,
            service_name=job.project_name,
            host=job.target.host,
            port=job.service_port,
            request_id=state["request_id"],
            repo=job.repo,
            ref=job.ref,
            project_dir=self.project_path(state),
            runtime=runtime if isinstance(runtime, str) else None,
            modules=list(job.modules),
            deployed_url=result.get("deployed_url"),
        )
        created = record.get("id")
        return step(RECORD, "ok", f"record {created} created" if created else "record created")

    async def _ci_secrets(self, state: DeployState) -> StepOutcome:
        if self._github is None:
            return step(CI_SECRETS, "skipped", "GitHub not configured")
        github_repo = state.get("github_repo")
        if not github_repo:
            return step(CI_SECRETS, "skipped", "no GitHub repository for this project")
        job = job_of(state)
        values = {
            "DEPLOY_HOST": job.target.host,
            "DEPLOY_USER": self.deploy_user(state),
            "DEPLOY_PROJECT_PATH": self.project_path(state),
            "DEPLOY_PORT": str(job.service_port),
            "DEPLOY_SSH_PORT": str(job.target.port),
            **self._settings.ci_secrets,
        }
        names = await self._github.set_actions_secrets(github_repo, values)
        return step(CI_SECRETS, "ok", f"set {', '.join(names)} on {github_repo}")

    async def _status(self, state: DeployState) -> StepOutcome:
        project_id = project_id_of(state)
        if self._api is None:
            return step(STATUS, "skipped", "platform API not configured")
        if project_id is None:
            return step(STATUS, "skipped", "no project id")
        await self._api.set_project_status(project_id, "active")
        return step(STATUS, "ok", f"project {project_id} active")


class ReportFailureNode:
    """Mark the project ``error`` with the reason, when the platform API is configured."""

    def __init__(self, platform_api: PlatformApi | None) -> None:
        self._api = platform_api

    async def __call__(self, state: DeployState) -> dict[str, Any]:
        outcome = await _run(STATUS, state, lambda: self._report(state))
        update: dict[str, Any] = {"post_deploy": [outcome]}
        if outcome["status"] == "failed":
            update["errors"] = [f"reporting the failure failed: {outcome['detail']}"]
        return update

    async def _report(self, state: DeployState) -> StepOutcome:
        project_id = project_id_of(state)
        if self._api is None:
            return step(STATUS, "skipped", "platform API not configured")
        if project_id is None:
            return step(STATUS, "skipped", "no project id")
        reason = "; ".join(state.get("errors") or []) or "deploy failed"
        await self._api.set_project_status(project_id, "error", reason)
        return step(STATUS, "ok", f"project {project_id} marked error")


async def _run(
    name: str, state: DeployState, action: Callable[[], Awaitable[StepOutcome]]
) -> StepOutcome:
    """Run one step; our errors become a ``failed`` outcome (a bug still raises)."""
    try:
        outcome = await action()
    except DeploystreamError as exc:
        outcome = step(name, "failed", str(exc))
    log_method = log.warning if outcome["status"] == "failed" else log.info
    log_method(
        "deploy.step",
        request_id=state.get("request_id"),
        step=name,
        status=outcome["status"],
        detail=outcome["detail"],
    )
    return outcome
