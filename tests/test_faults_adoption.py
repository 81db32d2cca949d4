"""Leases and adoption: a dead executor's job is adopted; a live one's never is."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from contracts import Accepted, HostResult, TaskStarted
from tests.faults_support import (
    accepted_attempts,
    all_pids,
    check_stream,
    fault_env,
    pids_matching,
    reclaims,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.slow


def test_kill9_executor_mid_run_is_adopted_and_succeeds(tmp_path: Path) -> None:
    with fault_env(tmp_path, concurrency=1) as env:
        env.start_executors("ex-a", "ex-b")
        marker = 7.4113  # unique: `sleep 7.4113` is this run's task process
        rid = env.submit("sleep", extra_vars={"sleep_s": marker})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        victim = env.owner(rid)
        wait_for(lambda: pids_matching(f"sleep {marker}"), 30, "the sleep task to run")

        # kill -9 of the executor process alone: its run (ansible-playbook, the
        # setsid'd workers, the sleep) must not outlive it -- the run guard sees
        # its parent die and kills the tree -- so the adopter's run is the only one.
        first_run = pids_matching(f"sleep {marker}") + pids_matching(f"{tmp_path}/work/run-")
        assert len(first_run) >= 3  # guard, ansible-playbook, its worker(s), the sleep
        ep = env.proc(victim)
        os.kill(ep.proc.pid, signal.SIGKILL)
        ep.proc.wait(10)
        wait_for(
            lambda: not set(first_run) & set(all_pids()),
            15,
            "the dead executor's run to be killed",
        )
        result = env.wait_result(rid)
        events = env.events(rid)
        assert check_stream(events) is not None
        assert result.status == "success", (result, env.logs())
        assert result.attempt >= 2
        assert result.executor != victim
        [reclaimed] = reclaims(events)
        assert reclaimed.previous_owner == victim
        assert reclaimed.attempt == result.attempt
        assert accepted_attempts(events) == [1, result.attempt]
        assert len(env.results(rid)) == 1
        # Every host result after the reclaim belongs to the new attempt.
        after = events[events.index(reclaimed) :]
        assert all(e.attempt == result.attempt for e in after if isinstance(e, HostResult))
        assert env.r.xpending(env.config.streams.provision, "executors")["pending"] == 0
        wait_gone(f"sleep {marker}")


def test_long_job_with_short_lease_runs_once_across_three_executors(tmp_path: Path) -> None:
    # A 12 s playbook with a 1.5 s lease: renewed all along, never adopted.
    with fault_env(tmp_path, lease_ms=1500, reclaim_ms=200) as env:
        env.start_executors("ex-a", "ex-b", "ex-c")
        rid = env.submit("sleep", extra_vars={"sleep_s": 12})
        result = env.wait_result(rid, timeout=180)
        events = env.events(rid)
        check_stream(events)
        assert result.status == "success", result
        assert result.attempt == 1
        assert len([e for e in events if isinstance(e, Accepted)]) == 1
        assert reclaims(events) == []
        for ep in env.procs:
            assert "adopt.claimed" not in ep.output(), ep.output()
            assert "lease.lost" not in ep.output(), ep.output()
