"""SIGTERM: a running job finishes within the grace period, or (grace 0) is given
back and adopted by another executor; the executor exits 0; nothing is lost."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from contracts import TaskStarted
from tests.faults_support import (
    check_stream,
    fault_env,
    pids_matching,
    reclaims,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.slow


def test_sigterm_lets_the_running_job_finish_and_takes_no_new_work(tmp_path: Path) -> None:
    with fault_env(tmp_path, grace_s=60) as env:
        ex = env.start_executor("ex-a")
        rid = env.submit("sleep", extra_vars={"sleep_s": 4})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        ex.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "executor.signal" in ex.output(), 10, "the signal to be seen")
        queued = env.submit("quick")  # submitted during the drain: not taken by ex-a
        assert ex.proc.wait(90) == 0, ex.output()
        result = env.wait_result(rid, timeout=10)
        assert result.status == "success" and result.executor == "ex-a", result
        assert result.attempt == 1 and reclaims(env.events(rid)) == []
        assert not env.events(queued)[1:], env.events(queued)
        assert not env.r.exists(env.config.executor_key("ex-a"))  # presence removed

        env.start_executor("ex-b")
        late = env.wait_result(queued)
        assert late.status == "success" and late.executor == "ex-b"


def test_sigterm_with_zero_grace_gives_the_job_back_for_adoption(tmp_path: Path) -> None:
    marker = 5.517
    with fault_env(tmp_path, grace_s=0, concurrency=1) as env:
        env.start_executors("ex-a", "ex-b")
        rid = env.submit("sleep", extra_vars={"sleep_s": marker})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        first_run = wait_for(lambda: pids_matching(f"sleep {marker}"), 30, "the sleep to start")
        owner = env.proc(env.owner(rid))
        other = next(ep for ep in env.procs if ep is not owner)
        owner.proc.send_signal(signal.SIGTERM)
        assert owner.proc.wait(60) == 0, owner.output()
        # Its run was stopped with it: no process of the first run is left.
        assert not [p for p in first_run if p in pids_matching(f"sleep {marker}")]
        assert "executor.abandon" in owner.output()
        # The entry was given back, adopted by the other executor, and run to the end.
        result = env.wait_result(rid, timeout=120)
        assert result.status == "success" and result.executor == other.name, result
        assert result.attempt == 2
        events = env.events(rid)
        check_stream(events)
        [reclaimed] = reclaims(events)
        assert reclaimed.previous_owner == owner.name and reclaimed.executor == other.name
        wait_gone(f"sleep {marker}")


def test_sigterm_while_redis_is_down_still_exits_and_loses_nothing(tmp_path: Path) -> None:
    marker = 6.283
    with fault_env(tmp_path, grace_s=0) as env:
        ex = env.start_executor("ex-a")
        rid = env.submit("sleep", extra_vars={"sleep_s": marker})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        wait_for(lambda: pids_matching(f"sleep {marker}"), 30, "the sleep to start")
        env.kill_redis()
        ex.proc.send_signal(signal.SIGTERM)
        # It cannot give the entry back or publish anything: it gives up and exits.
        assert ex.proc.wait(90) == 0, ex.output()
        wait_gone(f"sleep {marker}")
        env.start_redis()
        env.start_executor("ex-b")
        result = env.wait_result(rid, timeout=120)
        assert result.status == "success" and result.executor == "ex-b", result
        events = env.events(rid)
        check_stream(events)
        [reclaimed] = reclaims(events)
        assert reclaimed.previous_owner == "ex-a"
