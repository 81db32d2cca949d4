"""One deploy of a project per host at a time; provisions of one server likewise.

Real Redis, real executor processes, real playbooks: ``record_run`` writes when each
run starts and ends (and whether another run of the project was inside), so the
tests prove from the playbook's side as well as from the events that runs of one
project never overlap, that other projects still run side by side, and that a
waiting job is visible, outlasts its timeout and lease, and can be canceled.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import redis

from contracts import (
    Accepted,
    DeployJob,
    Event,
    PlaybookStarted,
    Reclaimed,
    Result,
    StreamsConfig,
    Target,
    Waiting,
    with_overrides,
)
from deploystream.keys import OrchestratorKeys
from deploystream.redis_conn import connect
from executor.job_lock import JobLock, LockScripts, lock_scopes
from executor.publisher import Fence
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_deploy_job, build_provision_job
from tests.harness import Executors, deployctl, read_events, wait_for_result

ANSIBLE_DIR = Path(__file__).parent / "ansible"


def _client_call(
    config: StreamsConfig, keys_dir: Path, fn: Callable[[StreamClient], Awaitable[Any]]
) -> Any:
    keys = OrchestratorKeys.load(keys_dir)

    async def go() -> Any:
        r = connect(config.redis.url)
        try:
            return await fn(StreamClient(r, config, keys))
        finally:
            await r.aclose()

    return anyio.run(go)


def _deploys(
    keys_dir: Path,
    project: str,
    refs: list[str],
    timeout_s: int = 900,
    playbook: str = "record_run",
    **extra_vars: Any,
) -> list[DeployJob]:
    keys = OrchestratorKeys.load(keys_dir)
    return [
        build_deploy_job(
            keys,
            project_name=project,
            repo="owner/name",
            ref=ref,
            playbook=playbook,
            timeout_s=timeout_s,
            extra_vars=extra_vars,
        )
        for ref in refs
    ]


def _submit(config: StreamsConfig, keys_dir: Path, jobs: list[DeployJob]) -> list[str]:
    async def all_of(c: StreamClient) -> list[str]:
        return [await c.submit(job) for job in jobs]

    ids: list[str] = _client_call(config, keys_dir, all_of)
    return ids


def _until(rclient: redis.Redis, config: StreamsConfig, rid: str, kind: type) -> list[Event]:
    deadline = time.monotonic() + 90
    while True:
        events = read_events(rclient, config, rid)
        if any(isinstance(e, kind) for e in events):
            return events
        assert time.monotonic() < deadline, events
        time.sleep(0.05)


def _holder_then_waiter(
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    holder: DeployJob,
    waiter: DeployJob,
) -> tuple[str, str]:
    """Submit ``holder``; once its playbook runs (it holds the lock), ``waiter``,
    until that one waits. (Submitted at the same moment, either may get the lock.)"""
    (first,) = _submit(config, keys_dir, [holder])
    _until(rclient, config, first, PlaybookStarted)
    (second,) = _submit(config, keys_dir, [waiter])
    _until(rclient, config, second, Waiting)
    return first, second


def _runs(path: Path) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """ref -> (start, end) from a ``record_run`` log, and its ``overlap`` lines."""
    starts: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    overlaps: list[str] = []
    for line in path.read_text().splitlines():
        what, ref, *rest = line.split()
        if what == "start":
            starts[ref] = float(rest[0])
        elif what == "end":
            spans[ref] = (starts[ref], float(rest[0]))
        else:
            overlaps.append(line)
    return spans, overlaps


def _span(events: list[Event]) -> tuple[float, float]:
    """When the playbook ran, by the events: its start to its last event before the result."""
    start = next(e.ts for e in events if isinstance(e, PlaybookStarted))
    end = max(e.ts for e in events if not isinstance(e, Result))
    return start, end


def _disjoint(spans: list[tuple[float, float]]) -> bool:
    ordered = sorted(spans)
    return all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))


def test_lock_scopes_are_per_project_and_host_and_per_server(keys_dir: Path) -> None:
    keys = OrchestratorKeys.load(keys_dir)
    job = build_deploy_job(keys, project_name="app", repo="o/n")
    assert lock_scopes(job) == {"deploy:app@localhost": "project app on localhost"}
    # Every local name is the same machine.
    local = msgspec.structs.replace(job, target=Target(host="127.0.0.1"))
    assert lock_scopes(local) == lock_scopes(job)
    other = build_deploy_job(keys, project_name="other", repo="o/n")
    assert lock_scopes(other).keys().isdisjoint(lock_scopes(job))
    remote = build_deploy_job(keys, project_name="app", repo="o/n", host="web1", ssh_port=2222)
    assert list(lock_scopes(remote)) == ["deploy:app@web1:2222"]
    two = msgspec.structs.replace(
        remote, hosts=[Target(host="web2"), Target(host="WEB1", port=2222)]
    )
    assert list(lock_scopes(two)) == ["deploy:app@web1:2222", "deploy:app@web2:22"]
    prov = build_provision_job(keys, server_handle="srv-1", host="web1")
    assert lock_scopes(prov) == {"provision:srv-1": "server srv-1"}


@pytest.mark.slow
def test_four_deploys_of_one_project_never_overlap_and_wait_visibly(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    redis_url: str,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    # A lease far shorter than the waits: a waiting job must keep it (never adopted).
    for name in ("ex-a", "ex-b"):
        executors.start(name, "--concurrency", "2", "--lease-ms", "2000")
    refs = ["r1", "r2", "r3", "r4"]
    ids = _submit(config, keys_dir, _deploys(keys_dir, "same", refs))
    by_id = {rid: wait_for_result(rclient, config, rid, timeout=180) for rid in ids}
    results = {rid: ev[-1] for rid, ev in by_id.items()}
    assert all(isinstance(r, Result) and r.status == "success" for r in results.values()), results

    # The playbook's own record: four runs, one after the other, never two inside.
    spans, overlaps = _runs(executors.apps_root / "same.runs")
    assert overlaps == [] and sorted(spans) == refs
    assert _disjoint(list(spans.values())), spans
    # The events say the same.
    assert _disjoint([_span(ev) for ev in by_id.values()])

    waited = {rid: [e for e in ev if isinstance(e, Waiting)] for rid, ev in by_id.items()}
    assert sum(1 for w in waited.values() if w) >= 2, waited
    for rid, events in by_id.items():
        # Accepted once, never adopted: the lease was kept while it waited.
        assert [type(e) for e in events if isinstance(e, (Accepted, Reclaimed))] == [Accepted]
        for w in waited[rid]:
            assert w.lock == "project same on localhost" and w.holder in ids and w.holder != rid
            assert events.index(w) < events.index(
                next(e for e in events if isinstance(e, PlaybookStarted))
            )

    # What a person sees: tail names what the deploy waited for.
    rid = next(r for r, w in waited.items() if w)
    out = deployctl("tail", rid, redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 0, out.stderr
    assert "waiting for project same on localhost (" in out.stdout, out.stdout
    # Released with the results: nothing held, nobody queued.
    held, queue = config.lock_keys("deploy:same@localhost")
    assert not rclient.exists(held) and not rclient.exists(queue)


@pytest.mark.slow
def test_different_projects_run_in_parallel(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a", "--concurrency", "1")
    executors.start("ex-b", "--concurrency", "1")
    jobs = _deploys(keys_dir, "one", ["a"]) + _deploys(keys_dir, "two", ["b"])
    ids = _submit(config, keys_dir, jobs)
    events = [wait_for_result(rclient, config, rid) for rid in ids]
    assert all(ev[-1].status == "success" for ev in events)  # type: ignore[union-attr]
    assert not any(isinstance(e, Waiting) for ev in events for e in ev)
    (a,) = _runs(executors.apps_root / "one.runs")[0].values()
    (b,) = _runs(executors.apps_root / "two.runs")[0].values()
    assert a[0] < b[1] and b[0] < a[1], (a, b)  # both were inside at once


@pytest.mark.slow
def test_cancel_of_a_waiting_deploy(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    redis_url: str,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a", "--concurrency", "2")
    first, second = _holder_then_waiter(
        rclient, config, keys_dir, *_deploys(keys_dir, "same", ["r1", "r2"])
    )
    out = deployctl("cancel", second, redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    events = wait_for_result(rclient, config, second)
    result = events[-1]
    assert isinstance(result, Result) and result.status == "canceled", result
    assert "while waiting for project same on localhost" in (result.error or "")
    assert not any(isinstance(e, PlaybookStarted) for e in events)  # never started
    # It left the queue at once: the first one ends as usual, alone.
    _, queue = config.lock_keys("deploy:same@localhost")
    assert not rclient.exists(queue)
    assert wait_for_result(rclient, config, first)[-1].status == "success"  # type: ignore[union-attr]
    spans, overlaps = _runs(executors.apps_root / "same.runs")
    assert list(spans) == ["r1"] and overlaps == []


def test_a_dead_holders_lock_expires(
    rclient: redis.Redis, config: StreamsConfig, redis_url: str, keys_dir: Path
) -> None:
    """Nobody renews the lock of an executor that died: it expires after two leases."""
    keys = OrchestratorKeys.load(keys_dir)
    stream, group = config.streams.deploy, config.groups.executors
    rclient.xgroup_create(stream, group, id="0", mkstream=True)
    jobs = [build_deploy_job(keys, project_name="p", repo="o/n") for _ in range(2)]
    for job in jobs:
        rclient.xadd(stream, {"job": b"x"})
    reply: Any = rclient.xreadgroup(group, "c", {stream: ">"})
    entries = reply[0][1]
    lease_ms = 300
    cfg = with_overrides(config, lease_ms=lease_ms)

    async def go() -> tuple[str, float, list[Waiting]]:
        r = connect(redis_url)
        try:
            scripts = LockScripts(r)
            locks = [
                JobLock(r, cfg, scripts, job, Fence(stream, eid.decode(), "c", 1))
                for job, (eid, _) in zip(jobs, entries, strict=True)
            ]
            never = threading.Event()
            assert await locks[0].acquire(never, lambda w: None) == "held"
            ttl = await r.pttl(cfg.lock_keys("deploy:p@localhost")[0])
            assert lease_ms < ttl <= 2 * lease_ms
            seen: list[Waiting] = []
            t0 = time.monotonic()
            got = await locks[1].acquire(never, seen.append)  # the holder never renews
            return got, time.monotonic() - t0, seen
        finally:
            await r.aclose()

    got, waited, seen = anyio.run(go)
    assert got == "held" and waited >= lease_ms / 1000 * 0.5
    assert [w.holder for w in seen] == [jobs[0].request_id]


def test_a_lock_gone_in_an_outage_is_taken_again_unless_someone_else_holds_it(
    rclient: redis.Redis, config: StreamsConfig, redis_url: str, keys_dir: Path
) -> None:
    """A lock key that expired while Redis was down (restarted from its AOF, the lease
    kept) is the owner's again at its next renewal, as its lease is; only another
    holder, or the entry no longer being ours, makes the lock lost."""
    keys = OrchestratorKeys.load(keys_dir)
    stream, group = config.streams.deploy, config.groups.executors
    rclient.xgroup_create(stream, group, id="0", mkstream=True)
    job = build_deploy_job(keys, project_name="p", repo="o/n")
    rclient.xadd(stream, {"job": b"x"})
    reply: Any = rclient.xreadgroup(group, "c", {stream: ">"})
    entry_id = reply[0][1][0][0].decode()
    held_key = config.lock_keys("deploy:p@localhost")[0]

    async def go() -> list[bool]:
        r = connect(redis_url)
        try:
            scripts = LockScripts(r)
            lock = JobLock(r, config, scripts, job, Fence(stream, entry_id, "c", 1))
            assert await lock.acquire(threading.Event(), lambda w: None) == "held"
            await r.delete(held_key)  # expired during the outage
            kept = await lock.renew()
            retaken = await r.get(held_key) == lock.value.encode()
            await r.set(held_key, "other-request c2 1")  # someone else has it now
            taken_by_other = await lock.renew()
            await r.delete(held_key)
            await r.xclaim(stream, group, "adopter", 0, [entry_id])  # no longer ours
            adopted = await lock.renew()
            not_retaken = not await r.exists(held_key)
            return [kept, retaken, taken_by_other, adopted, not_retaken]
        finally:
            await r.aclose()

    assert anyio.run(go) == [True, True, False, False, True]


@pytest.mark.slow
def test_the_wait_counts_against_neither_timeout_nor_lease(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    redis_url: str,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a", "--concurrency", "2", "--lease-ms", "1500")
    timeout_s = 30  # generous: a loaded CI machine can take 10 s to start Ansible
    (holder,) = _deploys(keys_dir, "same", ["h"], playbook="sleep")  # sleeps 60 s
    (waiter,) = _deploys(keys_dir, "same", ["w"], timeout_s=timeout_s, playbook="quick")
    first, second = _holder_then_waiter(rclient, config, keys_dir, holder, waiter)
    deadline = time.monotonic() + 60
    while True:  # until the waiter has waited longer than its whole timeout
        events = read_events(rclient, config, second)
        accepted = next((e.ts for e in events if isinstance(e, Accepted)), None)
        if accepted is not None and time.time() - accepted > timeout_s + 2:
            break
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert any(isinstance(e, Waiting) and e.holder == first for e in events), events
    assert not any(isinstance(e, (PlaybookStarted, Result)) for e in events), events
    out = deployctl("cancel", first, redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert wait_for_result(rclient, config, first)[-1].status == "canceled"  # type: ignore[union-attr]
    events = wait_for_result(rclient, config, second)
    assert events[-1].status == "success", events[-1]  # type: ignore[union-attr]
    # Accepted once, never adopted: its lease (1.5 s) was kept through the wait.
    assert [type(e) for e in events if isinstance(e, (Accepted, Reclaimed))] == [Accepted]
    assert {e.attempt for e in events if e.seq > 0} == {1}


@pytest.mark.slow
def test_provisions_of_one_server_queue_and_of_two_servers_do_not(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a", "--concurrency", "3")
    keys = OrchestratorKeys.load(keys_dir)
    jobs = [
        build_provision_job(keys, server_handle=handle, playbook="quick")
        for handle in ("srv-1", "srv-1", "srv-2")
    ]

    async def all_of(c: StreamClient) -> list[str]:
        return [await c.submit(job) for job in jobs]

    one, again, other = _client_call(config, keys_dir, all_of)
    runs = {rid: wait_for_result(rclient, config, rid) for rid in (one, again, other)}
    assert all(ev[-1].status == "success" for ev in runs.values())  # type: ignore[union-attr]
    # srv-1's two provisions never overlap, and one of them waited for the other.
    assert _disjoint([_span(runs[one]), _span(runs[again])])
    waits = [e for rid in (one, again) for e in runs[rid] if isinstance(e, Waiting)]
    assert waits and all(w.lock == "server srv-1" for w in waits), waits
    # srv-2 is another server: it never waited.
    assert not any(isinstance(e, Waiting) for e in runs[other])


@pytest.mark.slow
def test_sigterm_gives_a_waiting_job_back_at_once(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    """A waiting job has not started: a draining executor hands it to another one
    instead of holding it through its grace period."""
    executors.project_dir = ANSIBLE_DIR
    lease = ("--lease-ms", "1000")
    ex_a = executors.start("ex-a", "--concurrency", "2", *lease)
    holder, waiter = _holder_then_waiter(
        rclient, config, keys_dir,
        # The holder runs long enough to start ex-b, and ends within ex-a's grace.
        *_deploys(keys_dir, "same", ["h"], playbook="sleep", sleep_s=15),
        *_deploys(keys_dir, "same", ["w"], playbook="quick"),
    )  # fmt: skip
    executors.start("ex-b", *lease)
    assert ex_a.terminate(timeout=60) == 0, ex_a.output()  # the holder finishes first
    held = wait_for_result(rclient, config, holder)
    assert held[-1].status == "success" and held[-1].executor == "ex-a"  # type: ignore[union-attr]
    events = wait_for_result(rclient, config, waiter)
    result = events[-1]
    assert isinstance(result, Result) and result.status == "success" and result.executor == "ex-b"
    assert any(isinstance(e, Reclaimed) and e.previous_owner == "ex-a" for e in events)
    # Not a single task of it ran on ex-a; on ex-b it ran after the holder.
    assert {e.attempt for e in events if isinstance(e, PlaybookStarted)} == {result.attempt}
    assert _disjoint([_span(held), _span([e for e in events if e.attempt == result.attempt])])
