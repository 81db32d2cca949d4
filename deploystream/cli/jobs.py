"""Job commands: deploy, provision, tail, cancel, retry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import click

from contracts import Job, Result
from deploystream.cli.app import EXIT_BAD_INPUT, EXIT_JOB_FAILED, EXIT_OK, App
from deploystream.cli.follow import Display, follow, print_json
from deploystream.cli.params import HTTP_URL, KEY_VALUE, SECRET_VALUE, pairs
from deploystream.errors import BadInputError
from orchestrator.client import StreamClient
from orchestrator.job_builder import as_retry, build_deploy_job, build_provision_job


def run(fn: Callable[[], Awaitable[int]]) -> int:
    return anyio.run(fn)


async def _client(app: App, *, sign: bool) -> StreamClient:
    keys = app.orchestrator_keys() if sign else None
    return StreamClient(await app.redis(), app.config, keys)


async def check_playbook(client: StreamClient, playbook: str) -> None:
    """Refuse a playbook no live executor offers (when executors announce theirs)."""
    offered: set[str] = set()
    prefix = client.config.executor_key("")
    async for key in client.redis.scan_iter(match=f"{prefix}*", count=100):
        names = await client.redis.hget(key, "playbooks")  # type: ignore[misc]
        if names:
            offered.update(names.decode().split(","))
    if offered and playbook not in offered:
        raise BadInputError(
            f"unknown playbook {playbook!r}; executors offer: {', '.join(sorted(offered))}"
        )


def exit_code(results: dict[str, Result]) -> int:
    return EXIT_OK if results and all(r.ok for r in results.values()) else EXIT_JOB_FAILED


async def submit_and_follow(client: StreamClient, job: Job, *, detach: bool, json: bool) -> int:
    await check_playbook(client, job.playbook)
    request_id = await client.submit(job)
    if detach:
        if json:
            print_json({"type": "submitted", "request_id": request_id})
        else:
            click.echo(request_id)
        return EXIT_OK
    results = await follow(client, Display(json=json), [request_id])
    return exit_code(results)


JSON_OPT = click.option("--json", "json_out", is_flag=True, help="NDJSON events on stdout.")
DETACH_OPT = click.option("--detach", is_flag=True, help="Print the request id and return.")
TIMEOUT_OPT = click.option(
    "--timeout",
    "timeout_s",
    type=click.IntRange(1, 86_400),
    default=900,
    envvar="DEPLOYSTREAM_TIMEOUT",
    show_envvar=True,
    help="Playbook timeout in seconds.",
)
EXTRA_VAR_OPT = click.option(
    "--extra-var",
    "extra_vars",
    type=KEY_VALUE,
    multiple=True,
    help="Extra variable K=V (not secret; no ansible_* names).",
)


@click.command()
@click.option(
    "--project",
    "project_name",
    envvar="DEPLOYSTREAM_PROJECT",
    show_envvar=True,
    help="Project (service) name; may come from the platform API via --project-id.",
)
@click.option(
    "--repo",
    envvar="DEPLOYSTREAM_REPO",
    show_envvar=True,
    help="Git URL (https, ssh, file://) or owner/name.",
)
@click.option("--project-id", envvar="DEPLOYSTREAM_PROJECT_ID", show_envvar=True)
@click.option("--ref", envvar="DEPLOYSTREAM_REF", show_envvar=True, help="[default: main]")
@click.option(
    "--host",
    envvar="DEPLOYSTREAM_HOST",
    show_envvar=True,
    help="Target host; localhost (the default) uses Ansible's local connection.",
)
@click.option(
    "--service-port",
    type=click.IntRange(1, 65535),
    envvar="DEPLOYSTREAM_SERVICE_PORT",
    show_envvar=True,
    help="Port the service listens on (health-checked).",
)
@click.option("--env", "env", type=KEY_VALUE, multiple=True, help="Service env K=V (plain).")
@click.option(
    "--secret",
    "secrets",
    type=SECRET_VALUE,
    multiple=True,
    help="Secret K=V, or NAME to read it from the environment variable NAME "
    "(keeps it out of argv); sealed before it leaves this process.",
)
@EXTRA_VAR_OPT
@click.option(
    "--playbook", default="deploy_service", envvar="DEPLOYSTREAM_PLAYBOOK", show_envvar=True
)
@TIMEOUT_OPT
@click.option("--idempotency-key", envvar="DEPLOYSTREAM_IDEMPOTENCY_KEY", show_envvar=True)
@DETACH_OPT
@JSON_OPT
@click.option(
    "--api-url",
    type=HTTP_URL,
    envvar="DEPLOYSTREAM_API_URL",
    show_envvar=True,
    help="Platform API for post-deploy steps.",
)
@click.option(
    "--github-repo",
    envvar="DEPLOYSTREAM_GITHUB_REPO",
    show_envvar=True,
    help="owner/name whose Actions secrets to set.",
)
@click.option("--github-api-url", type=HTTP_URL, envvar="GITHUB_API_URL", show_envvar=True)
@click.option(
    "--github-token",
    envvar="GITHUB_TOKEN",
    show_envvar=True,
    help="Token for cloning and CI secrets (sealed on the wire).",
)
@click.option("--github-app-id", envvar="GITHUB_APP_ID", show_envvar=True)
@click.option(
    "--github-app-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="GITHUB_APP_KEY",
    show_envvar=True,
)
@click.option(
    "--checkpoint-db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DEPLOYSTREAM_CHECKPOINT_DB",
    show_envvar=True,
    help="SQLite checkpoint file of the deploy graph.",
)
@click.pass_obj
def deploy(app: App, /, **opts: Any) -> int:
    """Deploy a service through the DevOps graph, follow it live, then run post-deploy.

    Post-deploy (deployment record, GitHub Actions secrets, project status) runs
    only when following; --detach just submits the job and prints its request id.
    """
    from deploystream.cli.deploy_graph import deploy_with_graph

    async def main() -> int:
        keys = app.orchestrator_keys()
        client = StreamClient(await app.redis(), app.config, keys)
        await check_playbook(client, opts["playbook"])
        if opts["detach"]:
            missing = [f for f in ("project_name", "repo", "service_port") if not opts[f]]
            if missing:
                raise BadInputError(f"--detach needs {', '.join(missing)} (no API lookup)")
            job = build_deploy_job(
                keys,
                project_name=opts["project_name"],
                repo=opts["repo"],
                ref=opts["ref"] or "main",
                host=opts["host"] or "localhost",
                service_port=opts["service_port"],
                project_id=opts["project_id"],
                env=pairs(opts["env"]),
                secrets=pairs(opts["secrets"]),
                extra_vars=pairs(opts["extra_vars"]),
                playbook=opts["playbook"],
                timeout_s=opts["timeout_s"],
                idempotency_key=opts["idempotency_key"],
                github_token=opts["github_token"],
            )
            return await submit_and_follow(client, job, detach=True, json=opts["json_out"])
        return await deploy_with_graph(client, keys, opts)

    return run(main)


@click.command()
@click.option("--server", "server_handle", required=True, help="Server handle (name/id).")
@click.option("--host", default="localhost", envvar="DEPLOYSTREAM_HOST", show_envvar=True)
@EXTRA_VAR_OPT
@click.option("--playbook", default="provision_server")
@TIMEOUT_OPT
@click.option("--force-reinstall", is_flag=True)
@DETACH_OPT
@JSON_OPT
@click.pass_obj
def provision(
    app: App,
    server_handle: str,
    host: str,
    extra_vars: tuple[tuple[str, str], ...],
    playbook: str,
    timeout_s: int,
    force_reinstall: bool,
    detach: bool,
    json_out: bool,
) -> int:
    """Provision a server and follow it live."""

    async def main() -> int:
        keys = app.orchestrator_keys()
        job = build_provision_job(
            keys,
            server_handle=server_handle,
            host=host,
            extra_vars=pairs(extra_vars),
            playbook=playbook,
            timeout_s=timeout_s,
            force_reinstall=force_reinstall,
        )
        client = StreamClient(await app.redis(), app.config, keys)
        return await submit_and_follow(client, job, detach=detach, json=json_out)

    return run(main)


@click.command()
@click.argument("request_id")
@JSON_OPT
@click.pass_obj
def tail(app: App, request_id: str, json_out: bool) -> int:
    """Replay a request's events from the start, then follow live to its result."""

    async def main() -> int:
        client = await _client(app, sign=False)
        if not await client.exists(request_id):
            click.echo(f"error: no events for request {request_id} (unknown or expired)", err=True)
            return EXIT_BAD_INPUT
        return exit_code(await follow(client, Display(json=json_out), [request_id]))

    return run(main)


@click.command()
@click.argument("request_id")
@click.option("--reason", default="", help="Why (shown to whoever tails it).")
@click.pass_obj
def cancel(app: App, request_id: str, reason: str) -> int:
    """Cancel a queued or running request (its whole process tree is stopped)."""

    async def main() -> int:
        client = await _client(app, sign=False)
        if not await client.exists(request_id):
            click.echo(f"error: no request {request_id} (unknown or expired)", err=True)
            return EXIT_BAD_INPUT
        if await client.cancel(request_id, reason):
            click.echo(f"cancel requested for {request_id}")
            return EXIT_OK
        result = await client.last_result(request_id)
        status = result.status if result else "finished"
        click.echo(f"request {request_id} already finished ({status}); nothing to cancel")
        return EXIT_OK

    return run(main)


@click.command()
@click.argument("request_id")
@click.option("--failed-hosts", is_flag=True, help="Rerun only hosts that failed.")
@DETACH_OPT
@JSON_OPT
@click.pass_obj
def retry(app: App, request_id: str, failed_hosts: bool, detach: bool, json_out: bool) -> int:
    """Replay a request's original job as a new request linked by retry_of."""

    async def main() -> int:
        client = await _client(app, sign=True)
        original = await client.original_job(request_id)
        limit: list[str] | None = None
        if failed_hosts:
            result = await client.last_result(request_id)
            if result is None or not result.failed_hosts:
                raise BadInputError(f"request {request_id} has no failed hosts to retry")
            limit = result.failed_hosts
        job = as_retry(original, limit=limit)
        if not json_out:
            click.echo(f"retrying {request_id} as {job.request_id}", err=True)
        return await submit_and_follow(client, job, detach=detach, json=json_out)

    return run(main)
