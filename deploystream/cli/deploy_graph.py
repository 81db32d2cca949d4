"""``deployctl deploy`` through the LangGraph DevOps graph (orchestrator extra)."""

from __future__ import annotations

from typing import Any

import click

from deploystream.cli.follow import Display
from deploystream.cli.params import pairs
from deploystream.keys import OrchestratorKeys
from orchestrator.client import StreamClient
from orchestrator.run import run_deploy_graph
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployState, exit_code


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
    for key in ("repo", "ref", "host", "service_port", "idempotency_key", "github_repo"):
        if opts.get(key):
            request[key] = opts[key]
    return request


async def deploy_with_graph(
    client: StreamClient, keys: OrchestratorKeys, opts: dict[str, Any]
) -> int:
    settings = settings_from(opts)
    display = Display(json=opts["json_out"])
    with display:
        final = await run_deploy_graph(
            request_from(opts),
            gateway=client,
            keys=keys,
            settings=settings,
            secrets=pairs(opts["secrets"]),
            on_event=display.show,
        )
    for step in final.get("post_deploy", []):
        detail = f" — {step['detail']}" if step["detail"] else ""
        display.record(
            {"type": "post_deploy", "request_id": final.get("request_id"), **step},
            f"post-deploy {step['name']}: {step['status']}{detail}",
        )
    for error in final.get("errors", []):
        click.echo(f"error: {error}", err=True)
    return exit_code(final)
