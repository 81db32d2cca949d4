"""Job commands: deploy, provision, tail, cancel, retry.

Input is validated before anything is imported or connected for the work (a bad
``--project`` is rejected in well under a second, naming the option); only then
does a command connect to Redis, and only ``deploy`` (and ``retry`` of a deploy)
imports the graph.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from click.core import ParameterSource

from contracts import DeployJob, Job, Result
from contracts.rules import token_applies
from deploystream.cli.app import EXIT_JOB_FAILED, EXIT_OK, App
from deploystream.cli.follow import Display, follow, print_json
from deploystream.cli.interrupt import CANCEL_ON_INTERRUPT_OPT, follow_interruptibly
from deploystream.cli.params import (
    HOST_SPEC,
    HTTP_URL,
    KEY_VALUE,
    REQUEST_ID,
    SECRET_VALUE,
    pairs,
    warn_inline,
)
from deploystream.cli.validate import named, require
from deploystream.errors import BadInputError, FieldError
from deploystream.keys import OrchestratorKeys
from deploystream.presence import CLI_LABELS
from orchestrator.client import StreamClient
from orchestrator.job_builder import as_retry, build_deploy_job, build_provision_job
from orchestrator.settings import DEFAULT_GITHUB_API_URL


def run(fn: Callable[[], Awaitable[int]]) -> int:
    return anyio.run(fn)


async def _client(app: App, *, sign: bool = False) -> StreamClient:
    """A client that reads and verifies (tail), or signs too (cancel: executors
    believe only a cancel the orchestrator key signed)."""
    if sign:
        keys = app.orchestrator_keys()
        return StreamClient(await app.redis(), app.config, keys, wait_on_oom=False)
    return StreamClient(await app.redis(), app.config, trust=app.trust(), wait_on_oom=False)


async def check_executors(client: StreamClient, job: Job, *, texts: bool = True) -> Job:
    """Refuse what no live executor would run (when executors announce it): a playbook
    none offers, extra vars it does not declare, a ``file://`` repository none accepts.
    With ``texts``, ``--extra-var`` values are first converted to the declared types;
    returns the job as it will be submitted."""
    offers = await client.offers()
    if texts and job.extra_vars:
        typed = offers.typed_vars(job.playbook, job.extra_vars, CLI_LABELS)
        job = msgspec.structs.replace(job, extra_vars=typed)
    offers.check(job, CLI_LABELS)
    return job


def exit_code(results: dict[str, Result]) -> int:
    return EXIT_OK if results and all(r.ok for r in results.values()) else EXIT_JOB_FAILED


async def submit_and_follow(
    client: StreamClient,
    job: Job,
    *,
    detach: bool,
    json: bool,
    cancel_on_interrupt: bool = False,
    texts: bool = True,
) -> int:
    job = await check_executors(client, job, texts=texts)
    if detach:
        request_id = await client.submit(job)
        if json:
            print_json({"type": "submitted", "request_id": request_id})
        else:
            click.echo(request_id)
        return EXIT_OK
    request_id = await client.submit(job)  # with an idempotency key, maybe an earlier one

    async def work() -> int:
        return exit_code(await follow(client, Display(json=json), [request_id]))

    return await follow_interruptibly(
        client, lambda: request_id, work, cancel_on_interrupt=cancel_on_interrupt
    )


def build_job(build: Callable[..., Any], keys: OrchestratorKeys, **fields: Any) -> Any:
    """Build (and so validate) a job; a bad field is reported as its option."""
    try:
        return build(keys, **fields)
    except FieldError as exc:
        raise named(exc) from exc


JSON_OPT = click.option(
    "--json", "json_out", is_flag=True, help="One JSON object per line on stdout (NDJSON)."
)
DETACH_OPT = click.option(
    "--detach", is_flag=True, help="Submit, print the request id and return (no following)."
)
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
    help="Extra variable K=V (not secret), converted to its declared type: only a variable "
    "the playbook declares in NAME.vars.toml next to it (`deployctl executor --help` shows "
    "one). Repeatable.",
)
HOST_OPT = click.option(
    "--host",
    type=HOST_SPEC,
    multiple=True,
    envvar="DEPLOYSTREAM_HOST",
    show_envvar=True,
    help="[USER@]HOST[:PORT] to run on, repeatable: the first is the target, the rest "
    "more hosts of the same run. localhost (the default) uses Ansible's local connection; "
    "other hosts SSH with the executor's key and known hosts.",
)
SERIAL_OPT = click.option(
    "--serial",
    envvar="DEPLOYSTREAM_SERIAL",
    show_envvar=True,
    help="Rolling: run the hosts in batches of N, or N% of them (Ansible's serial).",
)
MAX_FAIL_OPT = click.option(
    "--max-fail-percent",
    type=click.IntRange(0, 100),
    envvar="DEPLOYSTREAM_MAX_FAIL_PERCENT",
    show_envvar=True,
    help="Rolling: stop when more than P% of a batch fails (remaining hosts: not_run).",
)


def host_fields(hosts: tuple[tuple[str, int, str | None], ...]) -> dict[str, Any]:
    """``--host`` values as job builder fields (target, then extra hosts)."""
    first, *rest = hosts or (("localhost", 22, None),)
    return {"host": first[0], "ssh_port": first[1], "ssh_user": first[2], "extra_hosts": rest}


# Post-deploy integrations: ``deploy`` and ``retry`` of a deploy take the same ones.
POST_DEPLOY_OPTS = (
    click.option(
        "--api-url",
        type=HTTP_URL,
        envvar="DEPLOYSTREAM_API_URL",
        show_envvar=True,
        help="Platform API for post-deploy steps (and --project-id look-ups).",
    ),
    click.option(
        "--github-repo",
        envvar="DEPLOYSTREAM_GITHUB_REPO",
        show_envvar=True,
        help="owner/name whose Actions secrets to set.",
    ),
    click.option(
        "--github-api-url",
        type=HTTP_URL,
        envvar="GITHUB_API_URL",
        show_envvar=True,
        help="GitHub API (GitHub Enterprise) [default: https://api.github.com].",
    ),
    click.option(
        "--github-token",
        envvar="GITHUB_TOKEN",
        show_envvar=True,
        help="Token for cloning (sent only to the repo's own GitHub host) and CI secrets "
        "(sealed on the wire). Prefer the environment variable: argv is visible to others.",
    ),
    click.option(
        "--github-app-id",
        envvar="GITHUB_APP_ID",
        show_envvar=True,
        help="GitHub App id (instead of --github-token; needs --github-app-key).",
    ),
    click.option(
        "--github-app-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="GITHUB_APP_KEY",
        show_envvar=True,
        help="PEM private key of the GitHub App.",
    ),
    click.option(
        "--checkpoint-db",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="DEPLOYSTREAM_CHECKPOINT_DB",
        show_envvar=True,
        help="SQLite checkpoint file of the deploy graph.",
    ),
)


def post_deploy_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(POST_DEPLOY_OPTS):
        fn = option(fn)
    return fn


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
    help="Git URL (https, ssh, file:// where executors allow it) or owner/name.",
)
@click.option(
    "--project-id",
    envvar="DEPLOYSTREAM_PROJECT_ID",
    show_envvar=True,
    help="Platform project id: with --api-url, missing inputs come from the platform API.",
)
@click.option(
    "--ref",
    envvar="DEPLOYSTREAM_REF",
    show_envvar=True,
    help="Branch, tag or commit to deploy. [default: main]",
)
@HOST_OPT
@SERIAL_OPT
@MAX_FAIL_OPT
@click.option(
    "--service-port",
    type=click.IntRange(1, 65535),
    envvar="DEPLOYSTREAM_SERVICE_PORT",
    show_envvar=True,
    help="Port the service listens on (health-checked).",
)
@click.option(
    "--env", "env", type=KEY_VALUE, multiple=True, help="Service env K=V (plain). Repeatable."
)
@click.option(
    "--secret",
    "secrets",
    type=SECRET_VALUE,
    multiple=True,
    help="Secret K=V, or NAME to read it from the environment variable NAME "
    "(keeps it out of argv); sealed before it leaves this process. Repeatable.",
)
@EXTRA_VAR_OPT
@click.option(
    "--playbook",
    default="deploy_service",
    envvar="DEPLOYSTREAM_PLAYBOOK",
    show_envvar=True,
    help="Playbook name (NAME.yml in the executors' project dir).",
)
@TIMEOUT_OPT
@click.option(
    "--idempotency-key",
    envvar="DEPLOYSTREAM_IDEMPOTENCY_KEY",
    show_envvar=True,
    help="Same key and same parameters: the same request; other parameters: refused.",
)
@DETACH_OPT
@JSON_OPT
@CANCEL_ON_INTERRUPT_OPT
@post_deploy_options
@click.pass_obj
def deploy(app: App, /, **opts: Any) -> int:
    """Deploy a service through the DevOps graph, follow it live, then run post-deploy.

    Post-deploy (deployment record, GitHub Actions secrets, project status) runs
    only when following; --detach just submits the job and prints its request id.
    Ctrl-C stops following (the deploy goes on); a second Ctrl-C within a few
    seconds, or --cancel-on-interrupt, cancels it.
    """
    source = click.get_current_context().get_parameter_source("github_token")
    if opts["github_token"] and source is ParameterSource.COMMANDLINE:
        warn_inline("--github-token TOKEN", "GITHUB_TOKEN in the environment")

    # Without a platform API look-up (--project-id with --api-url) these are needed.
    lookup = bool(opts["project_id"] and opts["api_url"] and not opts["detach"])
    if not lookup:
        given = {
            "--project": opts["project_name"],
            "--repo": opts["repo"],
            "--service-port": opts["service_port"],
        }
        require(
            given,
            {
                "--project": "the service name",
                "--repo": "its git URL",
                "--service-port": "the port it listens on",
            },
            "" if opts["detach"] else " (or --project-id with --api-url to look them up)",
        )
    keys = app.orchestrator_keys()
    job: DeployJob = build_job(
        build_deploy_job,
        keys,
        # Placeholders stand in for what the platform API will fill; all else is checked.
        project_name=opts["project_name"] or "placeholder",
        repo=opts["repo"] or "owner/placeholder",
        ref=opts["ref"] or "main",
        **host_fields(opts["host"]),
        serial=opts["serial"],
        max_fail_percent=opts["max_fail_percent"],
        service_port=opts["service_port"] or 8000,
        project_id=opts["project_id"],
        env=pairs(opts["env"]),
        secrets=pairs(opts["secrets"]),
        extra_vars=pairs(opts["extra_vars"]),
        playbook=opts["playbook"],
        timeout_s=opts["timeout_s"],
        idempotency_key=opts["idempotency_key"],
        # Only for an https repo on the GitHub host the token is for (never file://).
        github_token=opts["github_token"]
        if token_applies(opts["repo"] or "", opts["github_api_url"] or DEFAULT_GITHUB_API_URL)
        else None,
    )

    async def main() -> int:
        client = StreamClient(await app.redis(), app.config, keys, wait_on_oom=False)
        if opts["detach"]:
            return await submit_and_follow(client, job, detach=True, json=opts["json_out"])
        job_ = await check_executors(client, job)
        opts["extra_vars"] = tuple(job_.extra_vars.items())  # as the declared types
        # The graph (langgraph) is imported only now, after every check has passed.
        from deploystream.cli.deploy_graph import deploy_with_graph

        return await deploy_with_graph(client, keys, opts)

    return run(main)


@click.command()
@click.option(
    "--server",
    "server_handle",
    envvar="DEPLOYSTREAM_SERVER",
    show_envvar=True,
    help="Server handle (name/id) to provision.",
)
@HOST_OPT
@SERIAL_OPT
@MAX_FAIL_OPT
@click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Trust a host whose SSH key is not yet known on first contact, and record it "
    "(a changed key still fails).",
)
@EXTRA_VAR_OPT
@click.option(
    "--playbook",
    default="provision_server",
    envvar="DEPLOYSTREAM_PROVISION_PLAYBOOK",
    show_envvar=True,
    help="Playbook name (NAME.yml in the executors' project dir).",
)
@TIMEOUT_OPT
@click.option(
    "--force-reinstall", is_flag=True, help="Reinstall packages even when they are present."
)
@DETACH_OPT
@JSON_OPT
@CANCEL_ON_INTERRUPT_OPT
@click.pass_obj
def provision(
    app: App,
    server_handle: str | None,
    host: tuple[tuple[str, int, str | None], ...],
    serial: str | None,
    max_fail_percent: int | None,
    accept_new_host_key: bool,
    extra_vars: tuple[tuple[str, str], ...],
    playbook: str,
    timeout_s: int,
    force_reinstall: bool,
    detach: bool,
    json_out: bool,
    cancel_on_interrupt: bool,
) -> int:
    """Provision a server and follow it live (Ctrl-C: as for deploy)."""
    require({"--server": server_handle}, {"--server": "the server handle"})
    keys = app.orchestrator_keys()
    job = build_job(
        build_provision_job,
        keys,
        server_handle=server_handle,
        **host_fields(host),
        serial=serial,
        max_fail_percent=max_fail_percent,
        accept_new_host_key=accept_new_host_key,
        extra_vars=pairs(extra_vars),
        playbook=playbook,
        timeout_s=timeout_s,
        force_reinstall=force_reinstall,
    )

    async def main() -> int:
        client = StreamClient(await app.redis(), app.config, keys, wait_on_oom=False)
        return await submit_and_follow(
            client, job, detach=detach, json=json_out, cancel_on_interrupt=cancel_on_interrupt
        )

    return run(main)


@click.command()
@click.argument("request_id", type=REQUEST_ID)
@JSON_OPT
@click.pass_obj
def tail(app: App, request_id: str, json_out: bool) -> int:
    """Replay a request's events from the start, then follow live to its result.

    REQUEST_ID may be any unique prefix of at least 8 characters.
    """

    async def main() -> int:
        client = await _client(app)
        rid = await client.resolve(request_id)
        return exit_code(await follow(client, Display(json=json_out), [rid]))

    return run(main)


@click.command()
@click.argument("request_id", type=REQUEST_ID)
@click.option(
    "--reason",
    default="",
    envvar="DEPLOYSTREAM_CANCEL_REASON",
    show_envvar=True,
    help="Why (shown to whoever tails the request).",
)
@click.pass_obj
def cancel(app: App, request_id: str, reason: str) -> int:
    """Cancel a queued or running request (its whole process tree is stopped).

    REQUEST_ID may be any unique prefix of at least 8 characters.
    """

    async def main() -> int:
        client = await _client(app, sign=True)  # a cancel is signed: executors check it
        rid = await client.resolve(request_id)
        if await client.cancel(rid, reason):
            click.echo(f"cancel requested for {rid}")
            return EXIT_OK
        result = await client.last_result(rid)
        status = result.status if result else "finished"
        click.echo(f"request {rid} already finished ({status}); nothing to cancel")
        return EXIT_OK

    return run(main)


def _resigned(job: Job) -> str:
    if isinstance(job, DeployJob):
        return (
            f"re-signing the deploy of project {job.project_name!r} from repo {job.repo!r} "
            f"(ref {job.ref!r}) to {job.target.host}"
        )
    return f"re-signing the provisioning of server {job.server_handle!r} on {job.target.host}"


@click.command()
@click.argument("request_id", type=REQUEST_ID)
@click.option("--failed-hosts", is_flag=True, help="Rerun only hosts that failed.")
@DETACH_OPT
@JSON_OPT
@CANCEL_ON_INTERRUPT_OPT
@post_deploy_options
@click.pass_obj
def retry(app: App, /, request_id: str, **opts: Any) -> int:
    """Replay a request's original job as a new request linked by retry_of.

    A deploy is retried through the same graph as `deploy` (followed live, then
    post-deploy: record, CI secrets, project status), with the same post-deploy
    options. REQUEST_ID may be any unique prefix of at least 8 characters.
    """

    async def main() -> int:
        keys = app.orchestrator_keys()
        client = StreamClient(await app.redis(), app.config, keys, wait_on_oom=False)
        rid = await client.resolve(request_id)
        original = await client.original_job(rid)
        limit: list[str] | None = None
        if opts["failed_hosts"]:
            result = await client.last_result(rid)
            if result is None or not result.failed_hosts:
                raise BadInputError(f"request {rid} has no failed hosts to retry")
            limit = result.failed_hosts
        job = as_retry(original, limit=limit)
        # What gets signed anew, always said (on stderr, so --json stays parseable).
        click.echo(f"retrying {rid} as {job.request_id}: {_resigned(job)}", err=True)
        if isinstance(job, DeployJob) and not opts["detach"]:
            await check_executors(client, job, texts=False)
            from deploystream.cli.deploy_graph import retry_with_graph

            return await retry_with_graph(client, keys, job, opts)
        return await submit_and_follow(
            client,
            job,
            detach=opts["detach"],
            json=opts["json_out"],
            cancel_on_interrupt=opts["cancel_on_interrupt"],
            texts=False,  # the original job's values, already typed
        )

    return run(main)
