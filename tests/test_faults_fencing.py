"""Fencing: only the owner (consumer + delivery count) renews, publishes, finishes;
a retried publish writes nothing twice; an executor that loses its lease stops its
run and publishes nothing more."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis
from nacl.signing import SigningKey

from contracts import Output, Result, TaskStarted, decode_event, load_config
from deploystream.embedded_redis import EmbeddedRedis
from deploystream.keys import Signer
from deploystream.redis_conn import connect
from executor.publisher import EventPublisher, Fence, Lua
from tests.faults_support import fault_env, pids_matching, wait_for, wait_gone

SIGNER = Signer(SigningKey.generate())

GROUP = "executors"


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as s:
        yield s


def _entry(r: redis.Redis, stream: str, consumer: str) -> str:
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.xadd(stream, {"job": b"x"})
    reply = r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
    return reply[0][1][0][0].decode()


def _output(rid: str, n: int) -> Output:
    return Output(request_id=rid, seq=0, ts=time.time(), lines=[f"line {n}"])


def test_scripts_are_fenced_by_owner_and_delivery_count(server: EmbeddedRedis) -> None:
    config = load_config()
    stream = config.streams.provision
    r = redis.Redis.from_url(server.url)
    entry = _entry(r, stream, "ex-a")

    async def go() -> None:
        ar = connect(server.url)
        lua = Lua(ar)
        mine = Fence(stream, entry, "ex-a", 1)
        assert await lua.renew(keys=[stream], args=mine.args(GROUP)) == 1
        # Wrong count (a stale incarnation) or wrong name: refused.
        assert await lua.renew(keys=[stream], args=Fence(stream, entry, "ex-a", 2).args(GROUP)) == 0
        assert await lua.renew(keys=[stream], args=Fence(stream, entry, "ex-b", 1).args(GROUP)) == 0

        pub = EventPublisher(ar, config, "r1", fence=mine, signer=SIGNER, attempt=1, lua=lua)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.run)
            pub.emit(_output("r1", 1))
            pub.emit(_output("r1", 2))
            await anyio.sleep(0.2)
            # Another executor adopts the entry (delivery count 2): we are fenced out.
            r.xclaim(stream, GROUP, "ex-b", 0, [entry])
            pub.emit(_output("r1", 3))
            await pub.close()
        assert pub.lost and pub.published == 2
        assert await pub.finish(Result(request_id="r1", seq=0, ts=0, status="success")) == 0
        assert await lua.renew(keys=[stream], args=mine.args(GROUP)) == 0
        await ar.aclose()

    anyio.run(go)
    events = [decode_event(f[b"data"]) for _, f in r.xrange(config.events_key("r1"))]
    assert [e.seq for e in events] == [1, 2]
    assert r.xpending(stream, GROUP)["pending"] == 1  # not acked by the stale owner


def test_publish_and_finish_are_idempotent_when_retried(server: EmbeddedRedis) -> None:
    """A batch or a FINISH whose reply was lost (connection dropped) is sent again:
    nothing is written twice, and the retried FINISH reports the result as there."""
    config = load_config()
    stream = config.streams.provision
    r = redis.Redis.from_url(server.url)
    entry = _entry(r, stream, "ex-a")
    key = config.events_key("r2")

    async def go() -> None:
        ar = connect(server.url)
        lua = Lua(ar)
        fence = Fence(stream, entry, "ex-a", 1)
        pub = EventPublisher(ar, config, "r2", fence=fence, signer=SIGNER, attempt=1, lua=lua)
        batch = [(b"output", n, f'{{"type":"output","n":{n}}}'.encode()) for n in (1, 2, 3)]
        assert await pub._publish(batch) == 3
        assert await pub._publish(batch) == 3  # the retry: nothing new
        assert await pub._publish([*batch, (b"output", 4, b"{}")]) == 4  # only seq 4 added
        result = Result(request_id="r2", seq=0, ts=0, status="success")
        pub.seq = 4
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.run)
            assert await pub.finish(result) == 1
        # The same FINISH again (its reply lost): acked already, result there -> 2.
        again = await lua.finish(
            keys=[stream, key, pub.watermark],
            args=[*fence.args(GROUP), 60, 5, b"{}", "sig", "kid", "check"],
        )
        assert again == [2]
        await ar.aclose()

    anyio.run(go)
    seqs = [int(f[b"seq"]) for _, f in r.xrange(key)]
    assert seqs == [1, 2, 3, 4, 5]
    assert r.xpending(stream, GROUP)["pending"] == 0


@pytest.mark.slow
def test_executor_that_loses_its_lease_stops_and_publishes_nothing_more(
    tmp_path: Path,
) -> None:
    marker = 47.281
    with fault_env(tmp_path) as env:
        ex = env.start_executor("ex-a")
        rid = env.submit("sleep", extra_vars={"sleep_s": marker})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        wait_for(lambda: pids_matching(f"sleep {marker}"), 30, "the sleep to start")
        stream = env.config.streams.provision
        [pending] = env.r.xpending_range(stream, GROUP, "-", "+", 1)
        entry = pending["message_id"]
        # Someone else takes the entry over (as an adopter would) and, being alive,
        # keeps renewing its claim.
        env.r.xclaim(stream, GROUP, "thief", 0, [entry])
        before = env.raw_entries(rid)
        stop = threading.Event()

        def renew() -> None:
            r = redis.Redis.from_url(env.url)
            while not stop.wait(0.2):
                r.xclaim(stream, GROUP, "thief", 0, [entry], justid=True)
            r.close()

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        try:
            wait_for(lambda: "lease.lost" in ex.output(), 30, "the executor to notice")
            wait_gone(f"sleep {marker}")  # its run was stopped, whole tree
            wait_for(lambda: "job.released" in ex.output(), 30, "the run to be released")
            time.sleep(1.0)
            after = env.raw_entries(rid)
            assert after == before, after[len(before) :]  # nothing more published
            [row] = env.r.xpending_range(stream, GROUP, "-", "+", 1)
            assert row["consumer"] == b"thief"  # not acked, not taken back
        finally:
            stop.set()
            renewer.join(5)
        assert ex.proc.poll() is None
