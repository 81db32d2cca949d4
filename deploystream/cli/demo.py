"""``deployctl demo``: a real deployment end to end on a private, embedded Redis.

Starts its own redis-server (never the user's unless ``--redis-url`` is given),
N executor processes, creates a sample service repo, then deploys it while a
second deploy and a provisioning job run beside it, so the consumer group visibly
shares the work. Ends with a summary and stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import click
from rich.console import Console
from rich.table import Table

from contracts import Result, with_overrides
from deploystream.cli import demo_hosts
from deploystream.cli.app import EXIT_JOB_FAILED, EXIT_OK, App
from deploystream.cli.follow import Display, tail_into
from deploystream.cli.params import REDIS_URL
from deploystream.embedded_redis import EmbeddedRedis, free_port
from deploystream.keys import OrchestratorKeys, init_keys
from deploystream.redis_conn import connect
from deploystream.sample_service import create_sample_repo, stop_service
from deploystream.terminal import clean
from deploystream.testhosts import Fleet
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_deploy_job, build_provision_job, new_request_id

DEPLOYCTL = str(Path(sys.executable).parent / "deployctl")


def _start_executor(
    name: str, url: str, base: Path, apps: Path, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, REDIS_URL=url, DEPLOYSTREAM_KEYS_DIR=str(base / "keys"))
    log = (base / f"{name}.log").open("ab")
    return subprocess.Popen(
        [
            DEPLOYCTL,
            "--log-level",
            "info",
            "executor",
            "--name",
            name,
            "--apps-root",
            str(apps),
            "--work-dir",
            str(base / "work"),
            # Not root (a laptop): the demo's services run as the demo's own user.
            *([] if os.geteuid() == 0 else ["--unisolated-local-services"]),
            # The demo's sample service is a local (file://) repository.
            "--allow-file-repos",
            *(extra or []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_started(procs: dict[str, subprocess.Popen[bytes]], base: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for name, proc in procs.items():
        log = base / f"{name}.log"
        while "executor.started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(
                    f"executor {name} did not start:\n{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def _reachable(app: App) -> None:
    await (await app.redis()).aclose()


def summary_table(
    results: dict[str, Result], labels: dict[str, str], *, urls: bool = True
) -> Table:
    """One row per request; the URL column only while the services still run."""
    table = Table(title="deploystream demo")
    columns = ["request", "job", "executor", "status", "duration", "ok", "changed", "failed"]
    for col in [*columns, "URL"] if urls else columns:
        table.add_column(col)
    for rid, r in results.items():
        ok = sum(s.ok for s in r.stats.values())
        changed = sum(s.changed for s in r.stats.values())
        failed = sum(s.failed + s.unreachable for s in r.stats.values())
        table.add_row(
            rid[:8],
            labels.get(rid, ""),
            r.executor or "-",
            r.status,
            f"{r.duration_ms / 1000:.1f}s",
            str(ok),
            str(changed),
            str(failed),
            *([r.deployed_url or ""] if urls else []),
        )
    return table


@click.command()
@click.option(
    "--executors",
    "n_executors",
    type=click.IntRange(1, 16),
    default=2,
    help="Executor processes to start.",
)
@click.option("--keep", is_flag=True, help="Leave Redis, executors and services running.")
@click.option(
    "--redis-url",
    "demo_redis_url",
    type=REDIS_URL,
    default=None,
    help="Use this Redis instead of an embedded one (no env fallback, on purpose).",
)
@click.option(
    "--hosts",
    "n_hosts",
    type=click.IntRange(0, 8),
    default=0,
    envvar="DEPLOYSTREAM_DEMO_HOSTS",
    show_envvar=True,
    help="Make N real SSH test hosts (root: network namespaces) and deploy to them, rolling.",
)
@click.pass_obj
def demo(app: App, n_executors: int, keep: bool, demo_redis_url: str | None, n_hosts: int) -> int:
    """Run a real deployment end to end on an embedded Redis.

    With --hosts N (as root) the sample service is deployed to N SSH hosts made for
    the demo, one at a time (--serial 1); without root it says why and runs on
    localhost as usual.
    """
    # The graph (langgraph) is imported only when the demo runs: every other
    # command, the executor included, starts without it.
    from orchestrator.run import run_deploy_graph
    from orchestrator.settings import OrchestratorSettings
    from orchestrator.state import result_of

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    base = Path(tempfile.mkdtemp(prefix="deploystream-demo-"))
    # Apart from base (0700, holding keys and logs): a service deployed by a root
    # executor runs as a user of its own and must reach its app dir.
    apps = Path(tempfile.mkdtemp(prefix="deploystream-demo-apps-"))
    apps.chmod(0o711)
    server: EmbeddedRedis | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    services: list[Path] = []
    fleet: Fleet | None = None
    repo_dir: Path | None = None
    if n_hosts and (reason := demo_hosts.why_not()):
        console.print(f"[yellow]{reason}[/]: deploying on localhost as usual")
        n_hosts = 0
    try:
        if demo_redis_url:
            url = demo_redis_url
            demo_app = App(config=with_overrides(app.config, redis_url=url), keys_dir=base)
            anyio.run(_reachable, demo_app)  # a bad URL fails here, before any executor
        else:
            server = EmbeddedRedis(directory=base / "redis")
            (base / "redis").mkdir()
            server.start()
            url = server.url
            console.print(f"[bold]embedded Redis[/] {server.executable} on {url}")
        init_keys(base / "keys")
        extra: list[str] = []
        if n_hosts:
            fleet, known_hosts = demo_hosts.make_fleet(n_hosts, base, console)
            extra = demo_hosts.executor_args(fleet, known_hosts)
        for i in range(n_executors):
            name = f"executor-{i + 1}"
            procs[name] = _start_executor(name, url, base, apps, extra)
        _wait_started(procs, base, timeout=60)
        console.print(
            f"[bold]{n_executors} executors[/] in consumer group "
            f"{app.config.groups.executors!r}: {', '.join(procs)}"
        )
        config = with_overrides(app.config, redis_url=url)
        keys = OrchestratorKeys.load(base / "keys")
        if fleet is not None:
            repo_dir = demo_hosts.shared_repo_dir()
            repo = create_sample_repo(repo_dir / "sample-repo")
            console.print(f"[bold]sample service repo[/] {repo}\n")
            result, errors = demo_hosts.deploy_rolling(
                fleet, repo, url, config, keys, base / "checkpoints.sqlite"
            )
            for error in errors:
                console.print(f"  {error}", highlight=False)
            if keep and result is not None:
                for host, summary in result.hosts.items():
                    console.print(f"  {host}: {summary.status} {summary.url or summary.msg}")
            return EXIT_OK if result is not None and result.ok else EXIT_JOB_FAILED
        repo = create_sample_repo(base / "sample-repo")
        console.print(f"[bold]sample service repo[/] {repo}\n")
        ports = (free_port(), free_port())
        web = build_deploy_job(
            keys,
            project_name="demo-api",
            repo=repo,
            service_port=ports[1],
            secrets={"GREETING": "hello from the second service"},
        )
        prov = build_provision_job(keys, server_handle="demo-server")
        graph_rid = new_request_id()
        services = [apps / "demo-web", apps / "demo-api"]
        labels = {
            graph_rid: "graph deploy demo-web",
            web.request_id: "deploy demo-api",
            prov.request_id: "provision",
        }
        settings = OrchestratorSettings(
            checkpoint_db=base / "checkpoints.sqlite", apps_root=str(apps)
        )

        async def run_all() -> dict[str, Result]:
            redis = connect(url)
            results: dict[str, Result] = {}
            try:
                client = StreamClient(redis, config, keys, name="demo")
                display = Display(json=False, labels=labels)

                async def through_graph() -> None:
                    # The first deploy goes through the LangGraph DevOps graph, as
                    # `deployctl deploy` does; the others are plain jobs beside it.
                    final = await run_deploy_graph(
                        {"project": {"name": "demo-web"}, "repo": repo, "service_port": ports[0]},
                        gateway=client,
                        keys=keys,
                        settings=settings,
                        secrets={"GREETING": "hello from deploystream"},
                        thread_id=graph_rid,
                        on_event=display.show,
                    )
                    result = result_of(final)
                    if result is not None:
                        results[graph_rid] = result
                    for step in final.get("post_deploy", []):
                        notes.append(
                            f"post-deploy {step['name']}: {step['status']}"
                            + (f" ({step['detail']})" if step["detail"] else "")
                        )
                    notes.extend(final.get("errors", []))

                with display:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(through_graph)
                        for job in (web, prov):
                            await client.submit(job)
                        results.update(
                            await tail_into(client, display, [web.request_id, prov.request_id])
                        )
                return results
            finally:
                await redis.aclose()

        notes: list[str] = []
        results = anyio.run(run_all)
        console.print()
        console.print(summary_table(results, labels, urls=keep))
        for note in notes:
            console.print(f"  {clean(note)}", highlight=False, markup=False)
        ok = len(results) == 3 and all(r.ok for r in results.values())
        if keep:
            for r in results.values():
                if r.deployed_url:
                    console.print(f"  service up at [link={r.deployed_url}]{r.deployed_url}[/link]")
            console.print(
                f"\n--keep: Redis {url}, executors and services left running; files in {base}"
                f" and {apps}"
            )
        else:
            # Everything stops on the way out: no URL that would answer nothing.
            console.print(
                "\nstopping the services, executors and Redis of the demo "
                "(--keep leaves them running)"
            )
        return EXIT_OK if ok else EXIT_JOB_FAILED
    finally:
        if not keep:
            _stop(procs)
            demo_hosts.remove(fleet, repo_dir)
            for svc in services:
                stop_service(svc)
            if server is not None:
                server.close()
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(apps, ignore_errors=True)
