"""Chaos: many jobs, three executors, one killed -9 and Redis restarted mid-run.

Every job ends with exactly one terminal result, none is lost, and none ran twice
except through a visible adoption -- counted from the playbook's own side effect
(one line per run in a log file), not only from the events.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults_support import (
    Tail,
    accepted_attempts,
    check_stream,
    check_tail,
    fault_env,
    kill_tree,
    reclaims,
    wait_for,
)
from tests.harness import ExecutorProc

pytestmark = pytest.mark.slow
JOBS = 15


def test_chaos_executor_killed_and_redis_restarted(tmp_path: Path) -> None:
    runs_log = tmp_path / "runs.log"
    runs_log.touch()
    with fault_env(tmp_path, concurrency=2) as env:
        env.start_executors("ex-a", "ex-b", "ex-c")
        ids: list[str] = []
        for i in range(JOBS):
            ids.append(
                env.submit(
                    "count_runs",
                    extra_vars={"run_tag": f"job{i}", "runs_log": str(runs_log), "sleep_s": 1},
                )
            )
        tag = {rid: f"job{i}" for i, rid in enumerate(ids)}
        tails = [Tail(env, rid) for rid in ids[:6]]
        for t in tails:
            t.start()

        # Once a few jobs are done, kill -9 an executor that is running one ...
        wait_for(lambda: len(runs_log.read_text().split()) >= 6, 120, "6 runs to start")

        def busy() -> ExecutorProc | None:
            pending = env.r.xpending_range(env.config.streams.provision, "executors", "-", "+", 50)
            owners = {p["consumer"].decode() for p in pending}
            return next((ep for ep in env.procs if ep.name in owners), None)

        victim = wait_for(busy, 60, "an executor with a running job", every=0.05)
        kill_tree(victim)
        # ... and crash Redis while the others run.
        time.sleep(1.0)
        env.kill_redis()
        time.sleep(2.0)
        env.start_redis()

        for rid in ids:
            result = env.wait_result(rid, timeout=240)
            assert result.status == "success", (rid, result, env.logs())
        runs = Counter(runs_log.read_text().split())
        adopted = 0
        for rid in ids:
            events = env.events(rid)
            result = check_stream(events)
            assert len(env.results(rid)) == 1
            attempts = accepted_attempts(events)
            reclaimed = reclaims(events)
            # Every attempt after the first is a visible adoption naming the owner.
            assert [r.attempt for r in reclaimed] == attempts[1:], (rid, attempts, reclaimed)
            # The playbook ran once per attempt that got as far as its first task,
            # so more than once only where there was an adoption.
            assert 1 <= runs[tag[rid]] <= len(attempts), (rid, runs[tag[rid]], attempts)
            if runs[tag[rid]] > 1:
                assert reclaimed
            adopted += bool(reclaimed)
            assert result.executor != victim.name or not reclaimed
        assert adopted >= 1  # the victim's job(s) were adopted
        for t in tails:
            check_tail(t)
        for stream in env.config.job_streams:
            assert env.r.xpending(stream, "executors")["pending"] == 0
        alive = [ep for ep in env.procs if ep.proc.poll() is None]
        assert len(alive) == 2


def test_chaos_paused_executors_and_a_full_redis(tmp_path: Path) -> None:
    """Issue 20: 30 jobs while executors are paused (SIGSTOP) and resumed and Redis is
    filled to its maxmemory and freed. Every job ends with exactly one result, no
    playbook ran twice at once (the playbook's own exclusive lock), every tail ended."""
    import os
    import signal

    from tests.test_edges_redis import MAXMEMORY, fill, free

    runs_log, overlaps_log, locks = tmp_path / "runs.log", tmp_path / "overlaps.log", tmp_path / "l"
    for f in (runs_log, overlaps_log):
        f.touch()
    locks.mkdir()
    with fault_env(
        tmp_path,
        lease_ms=3000,
        reclaim_ms=200,
        concurrency=3,
        appendonly=False,
        redis_args=MAXMEMORY,
        extra_toml="publish-stall-s = 6\n",
    ) as env:
        env.start_executors("ex-a", "ex-b", "ex-c")
        tag: dict[str, str] = {}
        for i in range(30):
            rid = env.submit(
                "exclusive",
                extra_vars={
                    "run_tag": f"job{i}",
                    "runs_log": str(runs_log),
                    "overlaps_log": str(overlaps_log),
                    "lock_dir": str(locks),
                    "sleep_s": 2,
                },
            )
            tag[rid] = f"job{i}"
        tails = [Tail(env, rid) for rid in tag]
        for t in tails:
            t.start()

        def busy() -> ExecutorProc | None:
            pending = env.r.xpending_range(env.config.streams.provision, "executors", "-", "+", 50)
            owners = {p["consumer"].decode() for p in pending}
            return next((ep for ep in env.procs if ep.name in owners), None)

        def pause(ep: ExecutorProc, seconds: float) -> None:
            os.kill(ep.proc.pid, signal.SIGSTOP)
            time.sleep(seconds)  # the fault's duration, not a synchronization
            os.kill(ep.proc.pid, signal.SIGCONT)

        wait_for(lambda: len(runs_log.read_text().split()) >= 4, 120, "4 runs to start")
        pause(wait_for(busy, 60, "a busy executor", every=0.05), 4.5)  # > lease: adopted
        junk = fill(env.r)
        time.sleep(2.0)
        free(env.r, junk)
        pause(wait_for(busy, 60, "a busy executor", every=0.05), 1.8)  # > lease/2 only
        junk = fill(env.r)
        victim = wait_for(busy, 60, "a busy executor", every=0.05)
        pause(victim, 3.5)  # paused while Redis is full, too
        free(env.r, junk)

        for rid in tag:
            result = env.wait_result(rid, timeout=150)
            assert len(env.results(rid)) == 1, (rid, env.results(rid))
            assert result.status in ("success", "error"), (rid, result, env.logs())
            if result.status == "error":
                assert result.error and (
                    "could not be published" in result.error or "delivered" in result.error
                ), result
            check_stream(env.events(rid))
        assert overlaps_log.read_text() == "", "a playbook ran twice at once"
        assert any(reclaims(env.events(rid)) for rid in tag)  # the pauses were felt
        assert sum(env.results(rid)[0].status == "success" for rid in tag) >= 20
        for t in tails:
            check_tail(t)
        for stream in env.config.job_streams:
            assert env.r.xpending(stream, "executors")["pending"] == 0
        assert "handle.crashed" not in env.logs()
        assert all(ep.proc.poll() is None for ep in env.procs)
