"""Support for the fault tests (``tests/test_faults_*.py``).

Each fault test gets its own ``redis-server`` (``appendonly yes``, fsync always) so
it can kill -9 and restart it on the same port and directory, its own
``streams.toml`` (short lease, fast adoption), and real ``deployctl executor``
processes it can SIGTERM or kill -9 together with their whole process tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import redis

from contracts import (
    Accepted,
    Event,
    Reclaimed,
    Result,
    StreamsConfig,
    Submitted,
    Target,
    decode_event,
    load_config,
    with_overrides,
)
from deploystream.embedded_redis import EmbeddedRedis
from deploystream.keys import OrchestratorKeys, Trust, init_keys
from deploystream.redis_conn import connect
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_provision_job
from tests.harness import DEPLOYCTL, UNISOLATED_UNLESS_ROOT, ExecutorProc

ANSIBLE_DIR = Path(__file__).parent / "ansible"


# ---------------------------------------------------------------------- processes
def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_matching(fragment: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``fragment``."""
    me = os.getpid()
    return [p for p in all_pids() if p != me and fragment in cmdline(p)]


def descendants(root: int) -> list[int]:
    table = {p: _ppid(p) for p in all_pids()}
    out: list[int] = []
    todo = [p for p, pp in table.items() if pp == root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(p for p, pp in table.items() if pp == pid)
    return out


def kill_tree(ep: ExecutorProc) -> None:
    """kill -9 an executor and every process below it (its playbook runs), as a
    machine crash would. (Ansible workers call setsid(), so killing the process
    group is not enough.)"""
    pids = [ep.proc.pid, *descendants(ep.proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for pid in [*pids, *descendants(ep.proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ep.proc.wait(10)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(every)


def wait_gone(fragment: str, timeout: float = 15) -> None:
    """No process with ``fragment`` in its command line is left."""
    wait_for(lambda: not pids_matching(fragment), timeout, f"processes {fragment!r} to be gone")


# ---------------------------------------------------------------------- environment
CONFIG_TOML = """
[executor]
concurrency = {concurrency}
lease-ms = {lease_ms}
max-deliveries = {max_deliveries}
reclaim-interval-ms = {reclaim_ms}
shutdown-grace-s = {grace_s}
block-ms = 500
"""


@dataclass
class FaultEnv:
    base: Path
    server: EmbeddedRedis
    config_path: Path
    config: StreamsConfig
    keys_dir: Path
    r: redis.Redis
    procs: list[ExecutorProc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    # ------------------------------------------------------------ executors
    def start_executor(self, name: str, *args: str, wait: bool = True) -> ExecutorProc:
        log = self.base / f"{name}.log"
        argv = [
            DEPLOYCTL,
            "--config",
            str(self.config_path),
            "--log-level",
            "info",
            "executor",
            "--name",
            name,
            "--apps-root",
            str(self.base / "apps"),
            "--work-dir",
            str(self.base / "work"),
            *UNISOLATED_UNLESS_ROOT,
            "--allow-file-repos",  # the sample repos are file:// (opt-in since issue 19)
            "--project-dir",
            str(ANSIBLE_DIR),
            *args,
        ]
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                argv,
                env=self.env(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ep = ExecutorProc(name, proc, log)
        self.procs.append(ep)
        if wait:
            self._wait_started(ep)
        return ep

    def start_executors(self, *names: str) -> list[ExecutorProc]:
        """Start several at once (each takes seconds to import), then wait for all."""
        procs = [self.start_executor(name, wait=False) for name in names]
        for ep in procs:
            self._wait_started(ep)
        return procs

    def _wait_started(self, ep: ExecutorProc) -> None:
        wait_for(
            lambda: "executor.started" in ep.output() or ep.proc.poll() is not None,
            60,
            f"executor {ep.name} to start",
        )
        if ep.proc.poll() is not None:
            raise RuntimeError(f"executor {ep.name} exited:\n{ep.output()}")

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DEPLOYSTREAM_CONFIG", None)
        env.update(REDIS_URL=self.url, DEPLOYSTREAM_KEYS_DIR=str(self.keys_dir), **extra)
        return env

    def deployctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DEPLOYCTL, "--config", str(self.config_path), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def logs(self) -> str:
        return "\n".join(f"--- {ep.name}\n{ep.output()[-6000:]}" for ep in self.procs)

    # ------------------------------------------------------------ redis
    def kill_redis(self) -> None:
        self.server.kill()

    def start_redis(self) -> None:
        self.server.start(timeout=30)

    # ------------------------------------------------------------ jobs
    def submit(
        self,
        playbook: str,
        *,
        extra_vars: dict[str, Any] | None = None,
        timeout_s: int = 600,
        hosts: list[str] | None = None,
        idempotency_key: str | None = None,
        server_handle: str | None = None,
    ) -> str:
        keys = OrchestratorKeys.load(self.keys_dir)
        job = build_provision_job(
            keys,
            # A server of its own unless named: independent jobs take no server lock.
            server_handle=server_handle or f"srv-{os.urandom(4).hex()}",
            playbook=playbook,
            extra_vars=extra_vars or {},
            timeout_s=timeout_s,
            idempotency_key=idempotency_key,
        )
        if hosts:
            job = msgspec.structs.replace(job, hosts=[Target(host=h) for h in hosts])
        return self.run_client(lambda c: c.submit(job))

    def run_client(self, fn: Callable[[StreamClient], Any]) -> Any:
        keys = OrchestratorKeys.load(self.keys_dir)

        async def go() -> Any:
            r = connect(self.url)
            try:
                return await fn(StreamClient(r, self.config, keys))
            finally:
                await r.aclose()

        return anyio.run(go)

    def events(self, request_id: str) -> list[Event]:
        entries = self.r.xrange(self.config.events_key(request_id))
        return [decode_event(fields[b"data"]) for _, fields in entries]

    def raw_entries(self, request_id: str) -> list[tuple[str, dict[bytes, bytes]]]:
        return [(i.decode(), f) for i, f in self.r.xrange(self.config.events_key(request_id))]

    def results(self, request_id: str) -> list[Result]:
        return [e for e in self.events(request_id) if isinstance(e, Result)]

    def wait_event(
        self, request_id: str, pred: Callable[[Event], bool], timeout: float = 90, what: str = ""
    ) -> Event:
        def found() -> Event | None:
            with contextlib.suppress(redis.ConnectionError):
                for e in self.events(request_id):
                    if pred(e):
                        return e
            return None

        return wait_for(found, timeout, what or f"event on {request_id}")  # type: ignore[no-any-return]

    def wait_result(self, request_id: str, timeout: float = 150, generation: int = 1) -> Result:
        """The terminal result of the ``generation``-th generation (see client docs)."""

        def done() -> Result | None:
            with contextlib.suppress(redis.ConnectionError):
                results = self.results(request_id)
                if len(results) >= generation:
                    return results[generation - 1]
            return None

        try:
            return wait_for(done, timeout, f"result of {request_id}")  # type: ignore[no-any-return]
        except TimeoutError:
            raise TimeoutError(f"no result for {request_id}\n{self.logs()}") from None

    def owner(self, request_id: str) -> str:
        accepted = [e for e in self.events(request_id) if isinstance(e, Accepted)]
        return accepted[-1].executor

    def proc(self, name: str) -> ExecutorProc:
        return next(ep for ep in self.procs if ep.name == name and ep.proc.poll() is None)

    def close(self) -> None:
        for ep in self.procs:
            if ep.proc.poll() is None:
                kill_tree(ep)
        with contextlib.suppress(Exception):
            self.r.close()
        self.server.close()


@contextlib.contextmanager
def fault_env(
    base: Path,
    *,
    lease_ms: int = 1500,
    max_deliveries: int = 3,
    reclaim_ms: int = 300,
    grace_s: float = 30,
    concurrency: int = 2,
    appendonly: bool = True,
    extra_toml: str = "",
    redis_args: list[str] | None = None,
) -> Iterator[FaultEnv]:
    """``extra_toml`` is appended to the executor section (keys of ``[executor]``,
    or whole sections after it); ``redis_args`` go to ``redis-server``."""
    config_path = base / "streams.toml"
    config_path.write_text(
        CONFIG_TOML.format(
            concurrency=concurrency,
            lease_ms=lease_ms,
            max_deliveries=max_deliveries,
            reclaim_ms=reclaim_ms,
            grace_s=grace_s,
        )
        + extra_toml
    )
    keys_dir = base / "keys"
    init_keys(keys_dir)
    server = EmbeddedRedis(
        appendonly=appendonly, directory=base / "redis", extra_args=redis_args or []
    )
    (base / "redis").mkdir()
    server.start(timeout=30)
    config = with_overrides(load_config(config_path), redis_url=server.url)
    env = FaultEnv(
        base=base,
        server=server,
        config_path=config_path,
        config=config,
        keys_dir=keys_dir,
        r=redis.Redis.from_url(server.url),
    )
    try:
        yield env
    finally:
        env.close()


# ---------------------------------------------------------------------- tails
class Tail(threading.Thread):
    """Follows one request with :meth:`StreamClient.events` (the orchestrator's own
    reader, with its reconnects and seq checks) in a thread, to the final result."""

    def __init__(self, env: FaultEnv, request_id: str) -> None:
        super().__init__(daemon=True, name=f"tail-{request_id}")
        self.env = env
        self.request_id = request_id
        self.seen: list[tuple[str, Event]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        async def go() -> None:
            r = connect(self.env.url)
            try:
                client = StreamClient(r, self.env.config, trust=Trust.load(self.env.keys_dir))
                async for entry_id, event in client.events(self.request_id):
                    self.seen.append((entry_id, event))
            finally:
                with contextlib.suppress(Exception):
                    await r.aclose()

        try:
            anyio.run(go)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = 150) -> Result:
        self.join(timeout)
        assert not self.is_alive(), f"tail of {self.request_id} still running"
        assert self.error is None, repr(self.error)
        last = self.seen[-1][1]
        assert isinstance(last, Result), last
        return last


# ---------------------------------------------------------------------- assertions
def check_stream(events: list[Event]) -> Result:
    """The stored stream is well formed; returns the final result.

    Per generation (from a ``submitted`` to its ``result``): exactly one result,
    last; per attempt seq 1..n without gap or duplicate; ``event_count`` matches;
    every attempt after the first of a generation opened by ``reclaimed``.
    """
    assert events and isinstance(events[0], Submitted), events[:1]
    generations: list[list[Event]] = []
    for e in events:
        if isinstance(e, Submitted):
            generations.append([])
        generations[-1].append(e)
    final: Result | None = None
    for gen in generations:
        results = [e for e in gen if isinstance(e, Result)]
        assert len(results) == 1, f"{len(results)} results in a generation: {results}"
        final = results[0]
        assert gen[-1] is final, f"events after the result: {gen[gen.index(final) + 1 :]}"
        by_attempt: dict[int, list[int]] = {}
        for e in gen:
            if e.seq > 0:
                by_attempt.setdefault(e.attempt, []).append(e.seq)
        for attempt, seqs in by_attempt.items():
            assert seqs == list(range(1, len(seqs) + 1)), (attempt, seqs)
        mine = by_attempt[final.attempt]
        assert final.event_count == len(mine), (final.event_count, len(mine))
        attempts = sorted(by_attempt)
        for attempt in attempts[1:]:
            first = next(e for e in gen if e.attempt == attempt and e.seq == 1)
            if final.status != "error" or attempt != final.attempt:
                assert isinstance(first, Reclaimed), (attempt, first)
    assert final is not None
    return final


def check_tail(tail: Tail) -> Result:
    """What a tailing client saw: no gap, no duplicate seq, ends at the stored result."""
    result = tail.result()
    seen_seq: dict[int, list[int]] = {}
    ids = [i for i, _ in tail.seen]
    assert ids == sorted(ids, key=lambda i: tuple(int(x) for x in i.split("-"))), "out of order"
    assert len(ids) == len(set(ids)), "an entry was yielded twice"
    for _, e in tail.seen:
        if e.seq > 0:
            seen_seq.setdefault(e.attempt, []).append(e.seq)
    for attempt, seqs in seen_seq.items():
        assert seqs == list(range(1, len(seqs) + 1)), (attempt, seqs)
    stored = tail.env.events(tail.request_id)
    assert [type(e).__name__ for _, e in tail.seen] == [type(e).__name__ for e in stored][
        : len(tail.seen)
    ]
    return result


def accepted_attempts(events: list[Event]) -> list[int]:
    return [e.attempt for e in events if isinstance(e, Accepted)]


def reclaims(events: list[Event]) -> list[Reclaimed]:
    return [e for e in events if isinstance(e, Reclaimed)]
