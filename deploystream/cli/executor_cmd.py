"""``deployctl executor``: run an executor until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import click

from contracts import with_overrides
from deploystream.cli.app import App
from deploystream.known_hosts import ENV_KNOWN_HOSTS
from deploystream.redis_policy import require_no_eviction


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    envvar="DEPLOYSTREAM_CONCURRENCY",
    show_envvar=True,
    help="Playbooks run at once (default: streams.toml).",
)
@click.option(
    "--name",
    envvar="DEPLOYSTREAM_EXECUTOR_NAME",
    show_envvar=True,
    help="Consumer name (default: hostname-pid).",
)
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    envvar="DEPLOYSTREAM_PROJECT_DIR",
    show_envvar=True,
    help="Ansible project dir: playbook NAME is DIR/NAME.yml (the allow-list); the extra "
    "vars a job may set for it are declared in DIR/NAME.vars.toml (none without one). "
    "Read at start; an executor without playbooks refuses to start.",
)
@click.option(
    "--lease-ms",
    type=click.IntRange(100),
    envvar="DEPLOYSTREAM_LEASE_MS",
    show_envvar=True,
    help="Lease of a running job (default: streams.toml).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="DEPLOYSTREAM_METRICS_PORT",
    show_envvar=True,
    help="Serve Prometheus metrics on this port.",
)
@click.option(
    "--apps-root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEPLOYSTREAM_APPS_ROOT",
    show_envvar=True,
    help="Where services are deployed on target hosts (default ~/deploystream-apps; as "
    "root /srv/deploystream-apps: the services' own users must be able to reach it).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEPLOYSTREAM_WORK_DIR",
    show_envvar=True,
    help="Parent of the private per-run directories (removed after each run).",
)
@click.option(
    "--ssh-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="DEPLOYSTREAM_SSH_KEY",
    show_envvar=True,
    help="SSH private key for remote hosts (never in a job).",
)
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=ENV_KNOWN_HOSTS,
    show_envvar=True,
    help="Known SSH host keys, checked strictly (deployctl hosts add). "
    "[default: ~/.ssh/known_hosts]",
)
@click.option(
    "--allow-file-repos/--no-file-repos",
    default=False,
    envvar="DEPLOYSTREAM_ALLOW_FILE_REPOS",
    show_envvar=True,
    help="Accept file:// repositories (off by default: a job could then read any "
    "repository on the executor's disk; the demo and local tests turn it on).",
)
@click.option(
    "--unisolated-local-services",
    is_flag=True,
    envvar="DEPLOYSTREAM_UNISOLATED_LOCAL_SERVICES",
    show_envvar=True,
    help="Not root: deploy services to localhost anyway. Gives up their isolation: such "
    "a service runs as this executor's user and can read its key files, run "
    "directories (other jobs' secrets), environment and other services' files.",
)
@click.option(
    "--shutdown-grace",
    type=click.FloatRange(0),
    envvar="DEPLOYSTREAM_SHUTDOWN_GRACE",
    show_envvar=True,
    help="Seconds running playbooks get after SIGTERM.",
)
@click.pass_obj
def executor(
    app: App,
    concurrency: int | None,
    name: str | None,
    project_dir: Path | None,
    lease_ms: int | None,
    metrics_port: int | None,
    apps_root: Path | None,
    work_dir: Path | None,
    ssh_key: Path | None,
    known_hosts: Path | None,
    allow_file_repos: bool,
    unisolated_local_services: bool,
    shutdown_grace: float | None,
) -> int:
    """Run an executor: consume job streams and run playbooks with ansible-runner.

    It runs only the playbooks of its project dir; a job for another playbook is
    handed to a live executor that has it. A job may set only the extra vars its
    playbook declares next to it, e.g. DIR/sleep.vars.toml:

    \b
        [vars.sleep_s]
        type = "float"   # str | int | float | bool | list
        min = 0
        max = 3600
    """
    from executor.service import run_executor
    from executor.settings import ExecutorSettings

    config = with_overrides(
        app.config, concurrency=concurrency, lease_ms=lease_ms, shutdown_grace_s=shutdown_grace
    )
    settings = ExecutorSettings(
        metrics_port=metrics_port,
        ssh_key_path=ssh_key,
        allow_file_repos=allow_file_repos,
        work_dir=work_dir,
        unisolated_local_services=unisolated_local_services,
    )
    overrides: dict[str, object] = {}
    if name:
        overrides["name"] = name
    if project_dir:
        overrides["project_dir"] = project_dir.resolve()
    if apps_root:
        overrides["apps_root"] = apps_root.resolve()
    if known_hosts:
        overrides["known_hosts"] = known_hosts.resolve()
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)  # type: ignore[arg-type]
    # Read now: a project dir without playbooks (or with a bad declaration) is refused
    # here, exit 2, rather than taking jobs it cannot run.
    settings.playbook_names()
    keys = app.executor_keys()

    async def main() -> int:
        redis = await app.redis()
        await require_no_eviction(redis, app.redis_url)
        return await run_executor(
            redis, config, settings, keys, signals=(signal.SIGTERM, signal.SIGINT)
        )

    return anyio.run(main)
