"""Redis trouble: kill -9 and restart (AOF) mid-run, dropped connections, and a
restart that lost everything (NOGROUP). Executors and tailing clients carry on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contracts import Accepted, TaskStarted
from tests.faults_support import Tail, check_stream, check_tail, fault_env, reclaims, wait_for

pytestmark = pytest.mark.slow


def test_redis_kill9_and_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    # Spare capacity everywhere: after the restart each executor could adopt the
    # other's jobs (they all look idle past the lease) -- and must not.
    with fault_env(tmp_path, concurrency=5) as env:
        env.start_executors("ex-a", "ex-b")
        ids = [env.submit("sleep", extra_vars={"sleep_s": 6}) for _ in range(4)]
        ids += [env.submit("quick") for _ in range(2)]
        tails = [Tail(env, rid) for rid in ids]
        for t in tails:
            t.start()
        for rid in ids[:4]:
            env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")

        # Every client connection dropped at once (executors and tails reconnect) ...
        env.r.client_kill_filter(_type="normal", skipme=True)
        time.sleep(0.5)
        # ... then Redis crashes, and is down for longer than the lease.
        env.kill_redis()
        time.sleep(2.5)
        env.start_redis()

        for rid, tail in zip(ids, tails, strict=True):
            result = env.wait_result(rid, timeout=180)
            assert result.status == "success", (rid, result, env.logs())
            events = env.events(rid)
            assert check_stream(events) == result
            assert check_tail(tail) == result
            assert len(env.results(rid)) == 1
            # After the restart every entry looked idle past the lease; owners
            # renewed first, so nothing was adopted (or run) a second time.
            assert reclaims(events) == [], (rid, env.logs())
            assert len([e for e in events if isinstance(e, Accepted)]) == 1
        for ep in env.procs:
            assert ep.proc.poll() is None, ep.output()
        stream = env.config.streams.provision
        assert env.r.xpending(stream, "executors")["pending"] == 0

        # And the pool keeps working afterwards.
        rid = env.submit("quick")
        assert env.wait_result(rid).status == "success"


def test_restart_without_persistence_recreates_the_group(tmp_path: Path) -> None:
    # No AOF: Redis comes back empty (NOGROUP for every consumer-group command).
    with fault_env(tmp_path, appendonly=False) as env:
        ex = env.start_executor("ex-a")
        rid = env.submit("quick")
        assert env.wait_result(rid).status == "success"
        env.kill_redis()
        time.sleep(1.5)
        env.start_redis()
        rid = env.submit("quick")
        result = env.wait_result(rid, timeout=120)
        assert result.status == "success", (result, ex.output())
        check_stream(env.events(rid))
        assert ex.proc.poll() is None
        # Presence and control came back too: status sees it, cancel reaches it.
        wait_for(
            lambda: env.r.exists(env.config.executor_key("ex-a")), 30, "presence after restart"
        )
        rid = env.submit("sleep", extra_vars={"sleep_s": 60})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        assert env.deployctl("cancel", rid).returncode == 0
        assert env.wait_result(rid, timeout=60).status == "canceled"
