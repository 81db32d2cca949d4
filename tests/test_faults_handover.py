"""A job handed to an executor that has its playbook, and that executor dies."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import Accepted, Reclaimed, TaskStarted
from executor.settings import DEFAULT_PROJECT_DIR
from tests.faults_support import fault_env, kill_tree

pytestmark = pytest.mark.slow


def test_a_handed_job_whose_new_owner_dies_is_adopted_and_runs_where_its_playbook_is(
    tmp_path: Path,
) -> None:
    with fault_env(tmp_path, concurrency=1) as env:
        env.start_executor("ex-tests-1")  # the test playbooks, one slot
        env.start_executor("ex-builtin", "--project-dir", str(DEFAULT_PROJECT_DIR))
        busy = env.submit("sleep", extra_vars={"sleep_s": 4.321})
        env.wait_event(busy, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        # ex-tests-1 is full: ex-builtin reads "quick", lacks it, hands it to ex-tests-1.
        quick = env.submit("quick")
        env.wait_event(quick, lambda e: isinstance(e, Accepted) and e.executor == "ex-tests-1")
        env.start_executor("ex-tests-2", "--concurrency", "2")
        kill_tree(env.proc("ex-tests-1"))  # kill -9: it dies holding both entries

        result = env.wait_result(quick)
        assert result.status == "success", result
        assert result.executor == "ex-tests-2"
        events = env.events(quick)
        accepted = [
            (e.executor, e.attempt, e.delivery_count) for e in events if isinstance(e, Accepted)
        ]
        # The hand-over did not count; the death of its holder did (attempt 2).
        assert accepted == [("ex-tests-1", 1, 1), ("ex-tests-2", 2, 2)]
        # Adopted directly or through ex-builtin's second hand-over: announced either way.
        reclaimed = [e for e in events if isinstance(e, Reclaimed)]
        assert [(e.executor, e.previous_owner) for e in reclaimed] == [("ex-tests-2", "ex-tests-1")]
        assert env.wait_result(busy).status == "success"
        assert env.r.xlen("ansible.provision.dead") == 0
