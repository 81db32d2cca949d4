"""``deployctl demo --hosts N``: the sample service deployed to N real SSH hosts, rolling.

The hosts are made as the test suite makes them (:mod:`deploystream.testhosts`: a
network namespace and an ``sshd`` each, with a deploy user holding the demo
executor's key), which needs root. Their keys are recorded in the demo's own
known-hosts file, and one deploy (``--serial 1``) rolls the service out host by host
through the DevOps graph, live. Everything is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
from rich.console import Console

from contracts import Result, StreamsConfig
from deploystream.cli.follow import Display
from deploystream.embedded_redis import free_port
from deploystream.keys import OrchestratorKeys
from deploystream.redis_conn import connect
from deploystream.testhosts import REMOTE_APPS_ROOT, Fleet, namespaces_available


def why_not() -> str | None:
    """Why N hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return f"--hosts needs root to make network namespaces (this is uid {os.geteuid()})"
    if not namespaces_available():
        return "--hosts: network namespaces cannot be made here (ip netns add failed)"
    return None


def make_fleet(n: int, base: Path, console: Console) -> tuple[Fleet, Path]:
    """N hosts and a known-hosts file holding their keys."""
    fleet = Fleet.create(base)
    for _ in range(n):
        host = fleet.add()
        console.print(f"[bold]SSH host[/] {host.name} at {host.addr} (its own netns and sshd)")
    return fleet, fleet.known_hosts(base / "known_hosts")


def executor_args(fleet: Fleet, known_hosts: Path) -> list[str]:
    return [
        "--apps-root", REMOTE_APPS_ROOT,
        "--ssh-key", str(fleet.executor_key),
        "--known-hosts", str(known_hosts),
    ]  # fmt: skip


def shared_repo_dir() -> Path:
    """A directory every host's deploy user can read the sample repo from."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"deploystream-demo-repo-{os.getpid()}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


def deploy_rolling(
    fleet: Fleet,
    repo: str,
    url: str,
    config: StreamsConfig,
    keys: OrchestratorKeys,
    checkpoint_db: Path,
) -> tuple[Result | None, list[str]]:
    """One rolling deploy (``--serial 1``) to every host of the fleet, through the graph."""
    from orchestrator.run import run_deploy_graph
    from orchestrator.settings import OrchestratorSettings
    from orchestrator.state import result_of

    first, *rest = fleet.hosts
    request = {
        "project": {"name": "demo-web"},
        "repo": repo,
        "service_port": free_port(),
        "host": first.addr,
        "ssh_user": first.spec.rpartition("@")[0],
        "extra_hosts": [[h.addr, h.port, h.spec.rpartition("@")[0]] for h in rest],
        "serial": "1",
    }

    async def go() -> tuple[Result | None, list[str]]:
        from orchestrator.client import StreamClient
        from orchestrator.job_builder import new_request_id

        redis = connect(url)
        try:
            client = StreamClient(redis, config, keys, name="demo")
            with Display(json=False) as display:
                final = await run_deploy_graph(
                    request,  # type: ignore[arg-type]
                    gateway=client,
                    keys=keys,
                    settings=OrchestratorSettings(checkpoint_db=checkpoint_db),
                    secrets={"GREETING": "hello from an SSH host"},
                    thread_id=new_request_id(),
                    on_event=display.show,
                )
            return result_of(final), list(final.get("errors", []))
        finally:
            await redis.aclose()

    return anyio.run(go)


def remove(fleet: Fleet | None, repo_dir: Path | None) -> None:
    if fleet is not None:
        fleet.close()
    if repo_dir is not None:
        shutil.rmtree(repo_dir, ignore_errors=True)
