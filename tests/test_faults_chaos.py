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
