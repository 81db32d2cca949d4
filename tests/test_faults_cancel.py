"""Cancel and timeout stop the run's whole process tree; a job cancelled while
queued never starts; cancelling a finished request says so."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from contracts import CancelRequested, PlaybookStarted, TaskStarted
from tests.faults_support import check_stream, fault_env, pids_matching, wait_for, wait_gone

pytestmark = pytest.mark.slow


def _unique_sleep() -> float:
    # `sleep 61.NNN` with a per-test duration: its command line identifies this run.
    return float(f"61.{random.randrange(100, 999)}")


def _no_run_left(base: Path, marker: float) -> None:
    wait_gone(f"sleep {marker}")
    # Nor any ansible-playbook of this test's executors (their run dirs live in base).
    wait_gone(f"{base}/work/run-")


def test_cancel_running_job_kills_its_tree_then_cancel_again_says_finished(
    tmp_path: Path,
) -> None:
    with fault_env(tmp_path, concurrency=2) as env:
        env.start_executor("ex-a")
        marker = _unique_sleep()
        rid = env.submit("sleep", extra_vars={"sleep_s": marker})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        sleepers = wait_for(lambda: pids_matching(f"sleep {marker}"), 30, "the sleep to start")
        assert sleepers

        # While it runs, status names the request, its owner and the live executor.
        out = env.deployctl("status", "--json")
        assert out.returncode == 0, out.stderr
        snap = json.loads(out.stdout)
        assert [(p["request_id"], p["owner"]) for p in snap["running"]] == [(rid, "ex-a")]
        [executor] = snap["executors"]
        assert executor["name"] == "ex-a" and executor["requests"] == [rid]
        assert snap["dead_letters"] == 0
        provision = next(s for s in snap["streams"] if s["stream"] == "ansible.provision")
        assert provision["group_info"]["pending"] == 1 and provision["group_info"]["lag"] == 0
        human = env.deployctl("status")
        assert human.returncode == 0 and rid in human.stdout and "ex-a" in human.stdout

        out = env.deployctl("cancel", rid, "--reason", "operator said so")
        assert out.returncode == 0, out.stderr
        assert "cancel requested" in out.stdout
        result = env.wait_result(rid, timeout=60)
        assert result.status == "canceled", result
        assert "deployctl" in (result.error or "")
        _no_run_left(tmp_path, marker)
        events = env.events(rid)
        check_stream(events)
        [note] = [e for e in events if isinstance(e, CancelRequested)]
        assert note.reason == "operator said so"
        tail = env.deployctl("tail", rid)  # whoever tails it is told why
        assert tail.returncode == 1 and "operator said so" in tail.stdout, tail.stdout

        again = env.deployctl("cancel", rid)
        assert again.returncode == 0, again.stderr
        assert "already finished (canceled)" in again.stdout
        assert len([e for e in env.events(rid) if isinstance(e, CancelRequested)]) == 1

        # Timeout: the same tree kill, and the result says timeout. How far Ansible gets
        # in 8 s depends on the machine's load (it may not reach the Sleep task), so the
        # tree shown alive before and gone after is the run's ansible-playbook's.
        marker = _unique_sleep()
        rid = env.submit("sleep", extra_vars={"sleep_s": marker}, timeout_s=8)
        run = f"{tmp_path}/work/run-"
        wait_for(lambda: pids_matching(run), 60, "the run's ansible-playbook to start")
        result = env.wait_result(rid, timeout=90)
        assert result.status == "timeout", result
        assert "timed out after 8 s" in (result.error or "")
        _no_run_left(tmp_path, marker)
        events = env.events(rid)
        check_stream(events)
        assert any(isinstance(e, PlaybookStarted) for e in events)
        assert env.proc("ex-a").proc.poll() is None


def test_cancel_of_queued_job_means_it_never_starts(tmp_path: Path) -> None:
    with fault_env(tmp_path) as env:
        marker = _unique_sleep()
        rid = env.submit("sleep", extra_vars={"sleep_s": marker})
        out = env.deployctl("cancel", rid)
        assert out.returncode == 0 and "cancel requested" in out.stdout, out.stderr
        env.start_executor("ex-a")
        result = env.wait_result(rid, timeout=60)
        assert result.status == "canceled", result
        assert "before it started" in (result.error or "")
        events = env.events(rid)
        check_stream(events)
        assert not any(isinstance(e, TaskStarted | PlaybookStarted) for e in events)
        assert not pids_matching(f"sleep {marker}")
        # The executor is free for the next job.
        rid2 = env.submit("quick")
        assert env.wait_result(rid2).status == "success"
