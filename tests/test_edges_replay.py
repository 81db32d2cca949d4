"""Issue 20, points 1 and 5: a late reader replays a big request completely; past the
size limit the executor says so; missing events and vanished streams are reported
in words with exit 3, never a traceback and never a hang.

The events are published by the executor's own publisher (fenced, pipelined) into a
real Redis, and read back by ``deployctl tail`` as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import redis

from contracts import (
    Accepted,
    Event,
    EventsCapped,
    Output,
    Result,
    StreamsConfig,
    Submitted,
    decode_event,
)
from deploystream.errors import StreamVanishedError
from deploystream.keys import ExecutorKeys, OrchestratorKeys, Trust
from deploystream.redis_conn import connect
from executor.freshness import Consumption
from executor.publisher import EventPublisher, Fence
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_provision_job
from orchestrator.run import run_deploy_graph
from orchestrator.state import exit_code
from tests.graph_support import ScriptedGateway, make_settings
from tests.harness import DEPLOYCTL, cli_env, deployctl


def _with_max_events(config: StreamsConfig, n: int) -> StreamsConfig:
    retention = msgspec.structs.replace(config.retention, request_max_events=n)
    return msgspec.structs.replace(config, retention=retention)


async def _publish_request(
    url: str, config: StreamsConfig, keys_dir: Path, n_events: int
) -> tuple[str, Result]:
    """Submit a job, take it as executor ``ex``, publish ``n_events`` outputs and the result."""
    r = connect(url)
    try:
        keys = OrchestratorKeys.load(keys_dir)
        client = StreamClient(r, config, keys)
        job = build_provision_job(keys, server_handle="srv", playbook="quick")
        rid = await client.submit(job)
        stream = config.streams.provision
        group = config.groups.executors
        await r.xgroup_create(stream, group, id="0", mkstream=True)
        reply = await r.xreadgroup(group, "ex", {stream: ">"}, count=1)
        entry_id = reply[0][1][0][0].decode()
        publisher = EventPublisher(
            r,
            config,
            rid,
            fence=Fence(stream, entry_id, "ex", 1),
            signer=ExecutorKeys.load(keys_dir).signer,
            attempt=1,
        )
        consumption = Consumption(
            key=config.consumed_key(rid, "test"),
            expires_at=time.time() + 3600,
            hold_s=3600,
            skew_s=60,
        )
        state, _ = await publisher.start(
            [Accepted(request_id=rid, seq=0, ts=0.0, executor="ex", delivery_count=1)],
            consumption,
        )
        assert state == "submitted"
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            for i in range(n_events):
                publisher.emit(Output(request_id=rid, seq=0, ts=0.0, lines=[f"line {i}"]))
            result = Result(request_id=rid, seq=0, ts=0.0, status="success", executor="ex")
            assert await publisher.finish(result) == 1
        return rid, result
    finally:
        await r.aclose()


def _tail_json(url: str, keys_dir: Path, rid: str) -> subprocess.CompletedProcess[str]:
    return deployctl("tail", rid, "--json", redis_url=url, keys_dir=keys_dir, timeout=120)


def test_a_25000_event_request_replays_completely_and_retry_finds_it(
    redis_url: str, config: StreamsConfig, keys_dir: Path
) -> None:
    rid, _ = anyio.run(_publish_request, redis_url, config, keys_dir, 25_000)
    done = _tail_json(redis_url, keys_dir, rid)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [decode_event(line) for line in done.stdout.splitlines()]
    assert isinstance(events[0], Submitted)  # the beginning is there
    seqs = [e.seq for e in events if e.seq > 0]
    assert seqs == list(range(1, 25_003))  # accepted, 25,000 outputs, result
    result = events[-1]
    assert isinstance(result, Result) and result.event_count == 25_002
    assert result.events_dropped == 0
    again = deployctl("retry", rid, "--detach", redis_url=redis_url, keys_dir=keys_dir)
    assert again.returncode == 0, again.stderr
    assert "not found" not in again.stderr


def test_past_the_limit_one_capped_event_then_the_result_counting_what_was_dropped(
    redis_url: str, config: StreamsConfig, keys_dir: Path
) -> None:
    small = _with_max_events(config, 50)
    rid, _ = anyio.run(_publish_request, redis_url, small, keys_dir, 100)
    r = redis.Redis.from_url(redis_url)
    try:
        stored = [decode_event(f[b"data"]) for _, f in r.xrange(small.events_key(rid))]
    finally:
        r.close()
    assert isinstance(stored[0], Submitted)
    assert len(stored) == 1 + 50  # submitted + exactly the limit
    capped = [e for e in stored if isinstance(e, EventsCapped)]
    assert len(capped) == 1 and capped[0].limit == 50 and capped[0].seq == 49
    result = stored[-1]
    assert isinstance(result, Result)
    # 1 accepted + 47 outputs published; 53 outputs dropped (one made way for the notice).
    assert (result.seq, result.event_count, result.events_dropped) == (50, 50, 53)
    # A reader still proves it saw every published event (seq and event_count agree).
    r2 = connect(redis_url)

    async def read() -> list[object]:
        try:
            client = StreamClient(r2, small, trust=Trust.load(keys_dir))
            return [e async for _, e in client.events(rid)]
        finally:
            await r2.aclose()

    seen = anyio.run(read)
    assert seen[-1] == result


@pytest.fixture
def published(redis_url: str, config: StreamsConfig, keys_dir: Path) -> Iterator[str]:
    rid, _ = anyio.run(_publish_request, redis_url, config, keys_dir, 30)
    yield rid


@pytest.mark.parametrize("loss", ["middle", "beginning"])
def test_a_reader_that_finds_events_missing_says_so_and_exits_3(
    loss: str, published: str, redis_url: str, config: StreamsConfig, keys_dir: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    key = config.events_key(published)
    ids = [i for i, _ in r.xrange(key)]
    if loss == "middle":
        r.xdel(key, ids[10])
    else:  # as MAXLEN trimming did: the oldest entries, submitted among them, gone
        r.xtrim(key, minid=ids[5], approximate=False)
    r.close()
    done = _tail_json(redis_url, keys_dir, published)
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert "events are missing" in done.stderr
    assert published in done.stderr


def test_a_tail_of_a_stream_that_vanishes_ends_with_a_message(
    redis_url: str, config: StreamsConfig, keys_dir: Path
) -> None:
    keys = OrchestratorKeys.load(keys_dir)
    job = build_provision_job(keys, server_handle="srv", playbook="quick")

    async def submit() -> str:
        r = connect(redis_url)
        try:
            return await StreamClient(r, config, keys).submit(job)
        finally:
            await r.aclose()

    rid = anyio.run(submit)  # queued; no executor will ever take it
    proc = subprocess.Popen(
        [DEPLOYCTL, "tail", rid, "--json"],
        env=cli_env(redis_url, keys_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the tail is following it now
        assert first["type"] == "submitted"
        r = redis.Redis.from_url(redis_url)
        r.delete(config.events_key(rid))  # its TTL ran out, or Redis evicted it
        r.close()
        rc = proc.wait(timeout=30)  # one blocking read (5 s), then it notices
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 3, stderr
    assert "is gone" in stderr and "Traceback" not in stderr


class _VanishingGateway(ScriptedGateway):
    async def events(self, request_id: str, after: str = "0") -> AsyncIterator[tuple[str, Event]]:
        async for item in super().events(request_id, after):
            if not isinstance(item[1], Submitted):
                raise StreamVanishedError(f"the event stream of request {request_id} is gone")
            yield item


def test_the_deploy_graph_reports_a_vanished_stream_as_infrastructure(
    tmp_path: Path, keys_dir: Path
) -> None:
    gateway = _VanishingGateway()

    async def go() -> dict[str, object]:
        with anyio.fail_after(30):
            return await run_deploy_graph(
                {
                    "project": {"name": "shop"},
                    "repo": "file:///srv/git/shop.git",
                    "timeout_s": 30,
                    "service_port": 8000,
                },
                gateway=gateway,
                keys=OrchestratorKeys.load(keys_dir),
                settings=make_settings(tmp_path),
                thread_id="req-gone",
            )

    final = anyio.run(go)
    assert final["outcome"] == "events_missing" and exit_code(final) == 3  # type: ignore[arg-type]
    assert "is gone" in final["errors"][0]  # type: ignore[index]
