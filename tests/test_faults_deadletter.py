"""Dead letters: a job that kills its executor every time ends dead-lettered with an
``error`` result after max-deliveries; ``dlq replay`` brings it back and it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import Submitted, TaskStarted
from deploystream.errors import BadInputError
from tests.faults_support import check_stream, fault_env, reclaims

pytestmark = pytest.mark.slow


def test_crashing_job_is_dead_lettered_then_replayed(tmp_path: Path) -> None:
    marker = tmp_path / "crash-now"
    marker.touch()
    with fault_env(tmp_path, max_deliveries=2, concurrency=1) as env:
        names = ("ex-a", "ex-b", "ex-c")
        env.start_executors(*names)
        rid = env.submit("crash", extra_vars={"crash_marker": str(marker)})

        # Delivery 1 and 2 each kill their executor; delivery 3 is past the max.
        result = env.wait_result(rid, timeout=180)
        assert result.status == "error", result
        assert "delivered 3 times (max 2)" in (result.error or "")
        assert result.attempt == 3
        dead_ones = [ep.name for ep in env.procs if ep.proc.poll() is not None]
        assert len(dead_ones) == 2, env.logs()
        [survivor] = [n for n in names if n not in dead_ones]
        assert result.executor == survivor
        events = env.events(rid)
        check_stream(events)
        # Attempt 2 was a visible adoption from the first victim by the second.
        [reclaimed] = reclaims(events)
        assert reclaimed.attempt == 2
        assert {reclaimed.previous_owner, reclaimed.executor} == set(dead_ones)
        # The entry left the job stream's pending list for the dead-letter stream.
        stream = env.config.streams.provision
        assert env.r.xpending(stream, "executors")["pending"] == 0

        out = env.deployctl("dlq", "list", "--json")
        assert out.returncode == 0, out.stderr
        [row] = [json.loads(line) for line in out.stdout.splitlines()]
        assert row["request_id"] == rid
        assert row["source_stream"] == stream
        assert row["delivery_count"] == 3 and row["attempt"] == 3
        assert "delivered 3 times" in row["reason"]
        assert row["playbook"] == "crash" and row["kind"] == "provision"

        # Fixed (the marker is gone): replay runs it again as the same request.
        marker.unlink()
        out = env.deployctl("dlq", "replay", row["entry_id"])
        assert out.returncode == 0, out.stderr
        assert rid in out.stdout
        final = env.wait_result(rid, generation=2)
        assert final.status == "success", (final, env.logs())
        assert final.attempt == 4  # numbered after the dead-lettered attempts
        assert final.executor == survivor
        events = env.events(rid)
        assert check_stream(events) == final
        assert [e for e in events if isinstance(e, Submitted)][1].job.request_id == rid
        assert any(isinstance(e, TaskStarted) and e.attempt == 4 for e in events)
        assert env.run_client(lambda c: c.dead_letters()) == []

        # A tail from the start reads through the first generation to the last result.
        tail = env.deployctl("tail", rid, "--json")
        assert tail.returncode == 0, tail.stderr
        lines = [json.loads(line) for line in tail.stdout.splitlines()]
        assert [x["status"] for x in lines if x["type"] == "result"] == ["error", "success"]
        assert lines[-1]["type"] == "result"

        # Replaying it again is refused: the dead letter is gone.
        with pytest.raises(BadInputError, match="no dead letter"):
            env.run_client(lambda c: c.replay_dead_letter(row["entry_id"]))
