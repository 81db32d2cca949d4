"""The deploy graph's state, its run context, and the outcome vocabulary.

State is checkpointed (SQLite/Postgres), so it holds only what may rest on disk:
builtins (dicts, lists, str) and the *sealed* job. Plaintext secrets travel in
:class:`DeployContext` (LangGraph's run context, never checkpointed); ``prepare``
seals them into the job and only their names enter the state. That is also why a
resumed run never needs them: the sealed job is already in the checkpoint.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

import msgspec

from contracts import DeployJob, Result

StepStatus = Literal["ok", "failed", "skipped"]

# The graph's final word, for the caller (CLI exit codes, service acks):
#   success             deployed and every post-deploy step ok or skipped
#   post_deploy_failed  deployed, but a post-deploy step failed (see ``post_deploy``)
#   deploy_failed       the job's result was failed | timeout | canceled | error | rejected
#   wait_exceeded       no result within timeout_s + queue allowance; the job may still run
#   events_missing      the request's events were lost (trimmed, expired, evicted) before
#                       its result could be read: infrastructure (exit 3)
#   bad_input           rejected by ``prepare``; nothing was submitted
#   unavailable         an integration ``prepare`` needs was unreachable; nothing submitted
Outcome = Literal[
    "success",
    "post_deploy_failed",
    "deploy_failed",
    "wait_exceeded",
    "events_missing",
    "bad_input",
    "unavailable",
]
EXIT_CODES: Mapping[str, int] = {
    "success": 0,
    "post_deploy_failed": 1,
    "deploy_failed": 1,
    "wait_exceeded": 1,
    "events_missing": 3,
    "bad_input": 2,
    "unavailable": 3,
}


class ProjectRef(TypedDict, total=False):
    id: str | None
    name: str


class StepOutcome(TypedDict):
    name: str
    status: StepStatus
    detail: str


class DeployState(TypedDict, total=False):
    # --- inputs (what the caller asks for; ``prepare`` fills gaps from the API)
    project: ProjectRef
    repo: str
    ref: str
    host: str
    ssh_port: int
    ssh_user: str | None
    extra_hosts: list[list[Any]]  # more hosts of the run: [host, port, user] each
    serial: str | None  # rolling: batches of N or N% of the hosts
    max_fail_percent: int | None
    service_port: int
    env: dict[str, str]  # plain, non-secret service environment
    extra_vars: dict[str, Any]
    modules: list[str]
    playbook: str
    timeout_s: int
    idempotency_key: str | None
    health_path: str
    github_repo: str | None  # OWNER/NAME for clone token and Actions secrets
    runtime: str | None
    secret_names: list[str]  # names only; values are in DeployContext
    sealed_secrets: dict[str, str]  # already sealed to the executors (service requests)
    request_id: str  # chosen up front (= the thread id), so a resume knows it
    # --- prepared
    job: dict[str, Any]  # the DeployJob as builtins: secrets and token already sealed
    # --- progress (checkpointed after every node, so a restart re-attaches)
    submitted: bool
    last_event_id: str
    wait_deadline: float  # epoch seconds: submit time + timeout_s + queue allowance
    # epoch seconds since when the job waits for its project's lock (a ``waiting``
    # event), None once it runs: that wait moves ``wait_deadline`` on.
    waiting_since: float | None
    events_seen: int
    result: dict[str, Any] | None  # the terminal contract Result as builtins
    # --- outcome
    outcome: Outcome
    post_deploy: Annotated[list[StepOutcome], operator.add]
    errors: Annotated[list[str], operator.add]


@dataclass(frozen=True)
class DeployContext:
    """Per-run values that must never be checkpointed."""

    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


def step(name: str, status: StepStatus, detail: str = "") -> StepOutcome:
    return {"name": name, "status": status, "detail": detail}


def prepared_request(job: DeployJob, *, github_repo: str | None = None) -> DeployState:
    """The graph input for a job built (signed, sealed) already, as ``retry`` has it:
    ``prepare`` finds the job and keeps it; submit, follow and post-deploy run as
    for any deploy. The inputs are the job's own, for post-deploy to read."""
    return {
        "project": {"id": job.project_id, "name": job.project_name},
        "repo": job.repo,
        "ref": job.ref,
        "host": job.target.host,
        "ssh_port": job.target.port,
        "ssh_user": job.target.user,
        "service_port": job.service_port,
        "modules": list(job.modules),
        "playbook": job.playbook,
        "timeout_s": job.timeout_s,
        "github_repo": github_repo,
        "request_id": job.request_id,
        "job": msgspec.to_builtins(job),
    }


def job_of(state: DeployState) -> DeployJob:
    return msgspec.convert(state["job"], DeployJob)


def result_of(state: Mapping[str, Any]) -> Result | None:
    raw = state.get("result")
    return None if raw is None else msgspec.convert(raw, Result)


def project_id_of(state: Mapping[str, Any]) -> str | None:
    project: Mapping[str, Any] = state.get("project") or {}
    pid = project.get("id")
    return None if pid in (None, "") else str(pid)


def exit_code(state: Mapping[str, Any]) -> int:
    """The CLI's exit code for a finished run (1 when the run did not finish)."""
    return EXIT_CODES.get(str(state.get("outcome")), 1)
