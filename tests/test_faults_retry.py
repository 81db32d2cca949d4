"""Retry by replay: ``deployctl retry`` reruns a failed request as a new request
linked by ``retry_of`` (after its executor is gone); ``--failed-hosts`` reruns only
the hosts that failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import HostResult, Submitted
from tests.faults_support import check_stream, fault_env

pytestmark = pytest.mark.slow


def _hosts_that_ran(events: list) -> set[str]:
    return {e.host for e in events if isinstance(e, HostResult)}


def test_retry_failed_request_and_only_its_failed_hosts(tmp_path: Path) -> None:
    marker = tmp_path / "fail-now"
    marker.touch()
    with fault_env(tmp_path, concurrency=2) as env:
        first = env.start_executor("ex-a")
        # Two local aliases: two inventory hosts of one job; it fails on one of them.
        rid = env.submit(
            "two_hosts",
            hosts=["127.0.0.1"],
            extra_vars={"fail_host": "127.0.0.1", "fail_marker": str(marker)},
        )
        failed = env.wait_result(rid)
        assert failed.status == "failed", failed
        assert failed.failed_hosts == ["127.0.0.1"]
        assert failed.failed_task == "Maybe fail"
        assert set(failed.stats) == {"localhost", "127.0.0.1"}
        assert failed.stats["localhost"].failed == 0
        check_stream(env.events(rid))

        # The executor that ran it is gone; a new one takes the retries.
        assert first.terminate() == 0
        env.start_executor("ex-b")
        marker.unlink()

        out = env.deployctl("retry", rid, "--failed-hosts", "--json")
        assert out.returncode == 0, (out.stdout, out.stderr, env.logs())
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert lines[-1]["type"] == "result" and lines[-1]["status"] == "success"
        retry_id = lines[-1]["request_id"]
        assert retry_id != rid
        events = env.events(retry_id)
        check_stream(events)
        submitted = events[0]
        assert isinstance(submitted, Submitted)
        assert submitted.job.retry_of == rid
        assert submitted.job.limit == ["127.0.0.1"]
        assert _hosts_that_ran(events) == {"127.0.0.1"}
        assert env.results(retry_id)[0].executor == "ex-b"

        # A plain retry reruns the whole job (both hosts), again linked to the original.
        out = env.deployctl("retry", rid, "--json")
        assert out.returncode == 0, (out.stdout, out.stderr)
        full_id = json.loads(out.stdout.splitlines()[-1])["request_id"]
        events = env.events(full_id)
        check_stream(events)
        assert events[0].job.retry_of == rid and events[0].job.limit == []
        assert _hosts_that_ran(events) == {"localhost", "127.0.0.1"}

        # Nothing failed in a successful request: --failed-hosts refuses, exit 2.
        out = env.deployctl("retry", full_id, "--failed-hosts")
        assert out.returncode == 2 and "no failed hosts" in out.stderr
