"""``deployctl deploy`` (and ``retry`` of a deploy) through the LangGraph DevOps graph."""

from __future__ import annotations

from typing import Any

import click

from contracts import DeployJob, Event
from deploystream.cli.follow import Display
from deploystream.cli.interrupt import follow_interruptibly
from deploystream.cli.params import pairs
from deploystream.keys import OrchestratorKeys
from deploystream.terminal import clean
from orchestrator.client import StreamClient
from orchestrator.github_secrets import infer_github_repo
from orchestrator.job_builder import new_request_id
from orchestrator.run import run_deploy_graph
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployState, exit_code, prepared_request


def settings_from(opts: dict[str, Any]) -> OrchestratorSettings:
    """Environment first (``from_env``), then the flags, which read the same variables."""
    changes: dict[str, Any] = {}
    for opt, field in (
        ("api_url", "api_url"),
        ("github_repo", "github_repo"),
        ("github_api_url", "github_api_url"),
        ("github_token", "github_token"),
        ("github_app_id", "github_app_id"),
        ("github_app_key", "github_app_key_path"),
        ("checkpoint_db", "checkpoint_db"),
    ):
        if opts.get(opt):
            changes[field] = opts[opt]
    if opts.get("github_app_id"):
        changes.setdefault("github_token", None)
    return OrchestratorSettings.from_env().with_changes(**changes)


def request_from(opts: dict[str, Any]) -> DeployState:
    request: DeployState = {
        "project": {"id": opts["project_id"], "name": opts["project_name"] or ""},
        "env": pairs(opts["env"]),
        "extra_vars": pairs(opts["extra_vars"]),
        "playbook": opts["playbook"],
        "timeout_s": opts["timeout_s"],
    }
    for key in ("repo", "ref", "service_port", "idempotency_key", "github_repo", "serial"):
        if opts.get(key):
            request[key] = opts[key]
    if opts.get("max_fail_percent") is not None:
        request["max_fail_percent"] = opts["max_fail_percent"]
    hosts = opts.get("host") or ()
    if hosts:  # --host [USER@]HOST[:PORT]: the first is the target, the rest more hosts
        request["host"], request["ssh_port"], request["ssh_user"] = hosts[0]
        request["extra_hosts"] = [list(spec) for spec in hosts[1:]]
    return request


async def _run(
    client: StreamClient,
    keys: OrchestratorKeys,
    request: DeployState,
    opts: dict[str, Any],
    *,
    secrets: dict[str, str],
    request_id: str,
) -> int:
    """Run the graph for one request, show it, then its post-deploy steps and errors."""
    settings = settings_from(opts)
    display = Display(json=opts["json_out"])
    followed = {"id": request_id}  # the request the graph follows (an idempotent duplicate's)

    def show(event: Event) -> None:
        followed["id"] = event.request_id
        display.show(event)

    async def work() -> int:
        with display:
            final = await run_deploy_graph(
                request,
                gateway=client,
                keys=keys,
                settings=settings,
                secrets=secrets,
                thread_id=request_id,
                on_event=show,
            )
        for step in final.get("post_deploy", []):
            detail = f" — {step['detail']}" if step["detail"] else ""
            display.record(
                {"type": "post_deploy", "request_id": final.get("request_id"), **step},
                f"post-deploy {step['name']}: {step['status']}{detail}",
            )
        for error in final.get("errors", []):
            click.echo(clean(f"error: {error}"), err=True)  # carries executor messages
        return exit_code(final)

    return await follow_interruptibly(
        client, lambda: followed["id"], work, cancel_on_interrupt=opts["cancel_on_interrupt"]
    )


async def deploy_with_graph(
    client: StreamClient, keys: OrchestratorKeys, opts: dict[str, Any]
) -> int:
    return await _run(
        client,
        keys,
        request_from(opts),
        opts,
        secrets=pairs(opts["secrets"]),
        request_id=new_request_id(),
    )


async def retry_with_graph(
    client: StreamClient, keys: OrchestratorKeys, job: DeployJob, opts: dict[str, Any]
) -> int:
    """A retried deploy runs the same graph: submit, follow, post-deploy (or report)."""
    github_repo = opts.get("github_repo") or settings_from(opts).github_repo
    request = prepared_request(job, github_repo=github_repo or infer_github_repo(job.repo))
    return await _run(client, keys, request, opts, secrets={}, request_id=job.request_id)
