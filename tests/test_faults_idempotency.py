"""Idempotency and dedupe: one idempotency key, one request; a redelivered job
whose request already has a terminal result is ACKed, not rerun."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from contracts import (
    Accepted,
    CancelRequested,
    Event,
    Output,
    PlaybookStarted,
    Reclaimed,
    Result,
    encode,
)
from tests.faults_support import FaultEnv, check_stream, fault_env, wait_for

pytestmark = pytest.mark.slow


def test_one_idempotency_key_one_request_one_job(tmp_path: Path) -> None:
    with fault_env(tmp_path) as env:
        # A retried submit sends the same parameters (the same server too).
        first = env.submit("quick", idempotency_key="deploy-42", server_handle="srv-42")
        second = env.submit("quick", idempotency_key="deploy-42", server_handle="srv-42")
        other = env.submit("quick", idempotency_key="deploy-43", server_handle="srv-43")
        assert first == second != other
        stream = env.config.streams.provision
        assert env.r.xlen(stream) == 2
        env.start_executor("ex-a")
        for rid in (first, other):
            assert env.wait_result(rid).status == "success"
            events = env.events(rid)
            check_stream(events)
            assert len([e for e in events if isinstance(e, Accepted)]) == 1


def test_redelivered_job_with_terminal_result_is_acked_not_rerun(tmp_path: Path) -> None:
    with fault_env(tmp_path, concurrency=1) as env:
        env.start_executor("ex-a")
        rid = env.submit("quick")
        assert env.wait_result(rid).status == "success"
        before = env.events(rid)
        stream = env.config.streams.provision
        [(_, fields)] = env.r.xrange(stream)

        # 1. The same signed entry again (an at-least-once producer): a new delivery.
        env.r.xadd(stream, fields)
        # 2. A copy delivered to a consumer that died before acking it: after the
        #    lease it is redelivered to ex-a by adoption (delivery count 2).
        env.r.xadd(stream, fields)
        env.r.xreadgroup("executors", "ghost", {stream: ">"}, count=1)

        def settled() -> bool:
            group = env.r.xinfo_groups(stream)[0]
            return group["pending"] == 0 and group["lag"] == 0

        wait_for(settled, 60, "both copies to be acked")
        after = env.events(rid)
        assert after == before  # nothing published: no accepted, no reclaimed, no result
        assert len([e for e in after if isinstance(e, Result)]) == 1
        assert not any(isinstance(e, Reclaimed) for e in after)
        log = env.proc("ex-a").output()
        assert log.count("job.duplicate") == 2, log


def _append(env: FaultEnv, request_id: str, events: list[Event]) -> None:
    key = env.config.events_key(request_id)
    for event in events:
        tag = msgspec.inspect.type_info(type(event)).tag  # type: ignore[attr-defined]
        env.r.xadd(key, {"type": tag, "seq": event.seq, "data": encode(event)})


def test_long_generation_is_read_past_the_starting_scripts_window(tmp_path: Path) -> None:
    """START decides from the latest 64 entries; past them the executor pages on."""
    with fault_env(tmp_path, concurrency=1) as env:
        rid = env.submit("quick")
        # An earlier attempt left 100 events and no result (its executor died).
        now = time.time()
        old = [
            Output(request_id=rid, seq=i, ts=now, attempt=7, lines=[f"line {i}"])
            for i in range(1, 101)
        ]
        _append(env, rid, old)
        env.start_executor("ex-a")
        result = env.wait_result(rid)
        assert result.status == "success" and result.attempt == 1
        events = env.events(rid)
        assert events[1:101] == old
        assert [type(e) for e in events[101:103]] == [Accepted, PlaybookStarted]
        assert len([e for e in events if isinstance(e, Accepted)]) == 1


def test_result_under_many_cancel_requests_is_still_a_duplicate(tmp_path: Path) -> None:
    """A result followed by more cancel_requested entries than START looks at."""
    with fault_env(tmp_path, concurrency=1) as env:
        env.start_executor("ex-a")
        rid = env.submit("quick")
        assert env.wait_result(rid).status == "success"
        now = time.time()
        _append(
            env,
            rid,
            [
                CancelRequested(request_id=rid, seq=0, ts=now, attempt=0, by="t", reason="late")
                for _ in range(70)
            ],
        )
        before = env.events(rid)
        stream = env.config.streams.provision
        [(_, fields)] = env.r.xrange(stream)
        env.r.xadd(stream, fields)  # delivered again

        def settled() -> bool:
            group = env.r.xinfo_groups(stream)[0]
            return group["pending"] == 0 and group["lag"] == 0

        wait_for(settled, 60, "the copy to be acked")
        assert env.events(rid) == before  # not run again: nothing published
        assert env.proc("ex-a").output().count("job.duplicate") == 1
