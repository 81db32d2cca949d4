"""Issue 20, point 6: a failed task keeps the tail of its stdout and stderr, redacted and
bounded, also when ansible-runner dropped its result for its size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import HostResult
from deploystream.redact import Redactor
from executor.translate import TAIL_CHARS, translate
from tests.faults_support import fault_env


def _failed_event(res: dict[str, object], *, dropped: bool) -> dict[str, object]:
    display = f"fatal: [web1]: FAILED! => {json.dumps(res)}\r\n"
    return {
        "event": "runner_on_failed",
        "stdout": display,
        "event_data": {"host": "web1", "task": "Migrate", "res": {} if dropped else res},
    }


@pytest.mark.parametrize("dropped", [False, True])
def test_a_failed_task_keeps_a_redacted_bounded_tail(dropped: bool) -> None:
    res = {
        "msg": "non-zero return code",
        "rc": 1,
        "stdout": "\n".join(f"line {i} " + "y" * 50 for i in range(100_000)),
        "stderr": "warming up\nusing token s3cr3t-value\nREAL ERROR: disk full",
    }
    event = translate(
        _failed_event(res, dropped=dropped),
        request_id="r1",
        attempt=1,
        ts=0.0,
        redact=Redactor(["s3cr3t-value"]),
    )
    assert isinstance(event, HostResult) and event.status == "failed"
    assert event.stderr_tail is not None and event.stderr_tail.endswith("REAL ERROR: disk full")
    assert "s3cr3t-value" not in event.stderr_tail
    assert event.stdout_tail is not None and event.stdout_tail.endswith("line 99999 " + "y" * 50)
    assert len(event.stdout_tail) <= TAIL_CHARS
    assert "REAL ERROR: disk full" in event.msg  # why, not only that it failed


def test_a_successful_task_carries_no_tail() -> None:
    raw = {
        "event": "runner_on_ok",
        "event_data": {"host": "web1", "task": "t", "res": {"stdout": "fine", "stderr": "x"}},
    }
    event = translate(raw, request_id="r1", attempt=1, ts=0.0, redact=Redactor([]))
    assert isinstance(event, HostResult)
    assert event.stdout_tail is None and event.stderr_tail is None


@pytest.mark.slow
def test_a_huge_failed_task_still_says_why(tmp_path: Path) -> None:
    with fault_env(tmp_path) as env:
        env.start_executor("ex-a")
        rid = env.submit("loud_failure")
        result = env.wait_result(rid)
        assert result.status == "failed", result
        assert result.failed_hosts == ["localhost"]
        assert result.stats["localhost"].failed == 1  # the play recap's word
        failed = [e for e in env.events(rid) if isinstance(e, HostResult) and e.status == "failed"]
        (event,) = failed
        assert event.stderr_tail == "REAL ERROR: disk full"
        assert event.stdout_tail is not None and event.stdout_tail.endswith("100000")
        assert len(event.stdout_tail) <= TAIL_CHARS
        assert "REAL ERROR: disk full" in event.msg
