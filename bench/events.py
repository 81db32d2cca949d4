"""events: event publishing, from a real playbook and from a synthetic emitter.

1. ``events.yml`` (four local-connection host aliases, two loops of N items each:
   >= 2,000 events) through deploystream vs bare ``ansible_runner.run``, alternated:
   wall-time slowdown (median of paired ratios) and the events/s deploystream
   published while the playbook ran.
2. Synthetic: the executor's own path without Ansible -- runner-shaped event dicts
   go through ``translate`` and ``EventPublisher.emit`` (from a worker thread, hopping
   to the event loop as the executor does, and straight from the loop), fenced
   PUBLISH batches to this benchmark's Redis: events/s capacity.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
import redis.asyncio as aioredis
from nacl.signing import SigningKey

from bench.common import Bench, bench_world, median, rnd, run_sync_to_result
from bench.overhead import bare_run
from contracts import HostResult
from deploystream.keys import Signer
from deploystream.redact import Redactor
from deploystream.redis_conn import connect
from executor.publisher import EventPublisher, Fence
from executor.translate import translate

TARGET_SLOWDOWN = 1.05
TARGET_RATE = 20_000


def _raw_event(i: int) -> dict[str, Any]:
    """What ansible-runner hands the event handler for one loop item."""
    return {
        "event": "runner_item_on_ok",
        "uuid": f"00000000-0000-0000-0000-{i:012d}",
        "counter": i,
        "stdout": f"ok: [alias1] => (item={i})",
        "event_data": {
            "host": "alias1",
            "task": "First loop",
            "duration": 0.0012,
            "res": {"msg": f"a {i}", "item": i, "_ansible_item_label": i, "changed": False},
        },
    }


async def _fenced_publisher(r: aioredis.Redis, world: Bench, rid: str) -> EventPublisher:
    """A publisher that owns a real pending job entry (the fence checks it)."""
    cfg = world.config
    stream = cfg.streams.provision
    group = cfg.groups.executors
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    await r.xadd(stream, {"job": b"synthetic"})
    reply = await r.xreadgroup(group, "synthetic", {stream: ">"}, count=1)
    entry_id = reply[0][1][0][0].decode()
    fence = Fence(stream, entry_id, "synthetic", 1)
    return EventPublisher(r, cfg, rid, fence=fence, signer=Signer(SigningKey.generate()))


async def _synthetic(world: Bench, n: int, *, from_thread: bool) -> float:
    r = connect(world.url)
    rid = f"synthetic-{'thread' if from_thread else 'loop'}-{time.monotonic_ns()}"
    redact = Redactor([])
    try:
        await r.delete(world.config.streams.provision)
        publisher = await _fenced_publisher(r, world, rid)
        raws = [_raw_event(i) for i in range(n)]

        def produce() -> None:
            for raw in raws:
                event = translate(raw, request_id=rid, attempt=1, ts=time.time(), redact=redact)
                assert event is not None
                publisher.emit_threadsafe(event)  # as the executor's runner callback

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            if from_thread:
                await anyio.to_thread.run_sync(produce)
            else:
                for i, raw in enumerate(raws):
                    event = translate(raw, request_id=rid, attempt=1, ts=time.time(), redact=redact)
                    assert isinstance(event, HostResult)
                    publisher.emit(event)
                    if i % 200 == 0:
                        await anyio.sleep(0)  # a producer that yields, like a real one
            await publisher.close()
        elapsed = time.perf_counter() - t0
        # (counted as sent: one attempt may publish up to retention.request-max-events)
        assert publisher.published == n, (publisher.published, n)
        return n / elapsed
    finally:
        await r.aclose()


def run(*, quick: bool = False) -> dict[str, Any]:
    items = 260  # 4 hosts x 2 loops x 260 items = 2,080 item events, plus task events
    pairs = 2 if quick else 3
    n_synth = 20_000 if quick else 50_000
    ds: list[float] = []
    bare: list[float] = []
    counts: list[int] = []
    rates: list[float] = []
    with bench_world() as world:
        world.start_executor("ex-0", concurrency=1)
        for i in range(pairs):
            order = ("ds", "bare") if i % 2 == 0 else ("bare", "ds")
            for which in order:
                if which == "bare":
                    seconds, status = bare_run("events", {"items": items})
                    assert status == "successful", status
                    bare.append(seconds)
                    continue
                job = world.job("events", items=items)
                t0 = time.perf_counter()
                result = run_sync_to_result(world, job)
                seconds = time.perf_counter() - t0
                assert result.status == "success", result
                ds.append(seconds)
                counts.append(result.event_count)
                rates.append(result.event_count / (result.duration_ms / 1000))
        world.stop_executors()
        world.flush()
        synth_loop = anyio.run(lambda: _synthetic(world, n_synth, from_thread=False))
        world.flush()
        synth_thread = anyio.run(lambda: _synthetic(world, n_synth, from_thread=True))
    ratios = [d / b for d, b in zip(ds, bare, strict=True)]
    slowdown = median(ratios)
    figures = {
        "playbook_events": max(counts),
        "pairs": pairs,
        "deploystream_median_s": rnd(median(ds)),
        "bare_median_s": rnd(median(bare)),
        "slowdown_median_paired": rnd(slowdown),
        "ratios": [rnd(x) for x in ratios],
        "published_events_per_s_during_playbook": rnd(median(rates), 1),
        "synthetic_events": n_synth,
        "synthetic_events_per_s_from_loop": rnd(synth_loop, 1),
        "synthetic_events_per_s_from_thread": rnd(synth_thread, 1),
    }
    capacity = min(synth_loop, synth_thread)
    targets = [
        {"what": "playbook slowdown vs bare ansible-runner", "target": f"<= {TARGET_SLOWDOWN}",
         "value": figures["slowdown_median_paired"], "met": slowdown <= TARGET_SLOWDOWN},
        {"what": "publishing capacity (synthetic, runner thread -> translate -> Redis)",
         "target": f">= {TARGET_RATE} events/s", "value": rnd(capacity, 1),
         "met": capacity >= TARGET_RATE},
    ]  # fmt: skip
    notes = [f"{max(counts)} events per playbook run (4 host aliases x 2 loops x {items} items)"]
    return {"benchmark": "events", "figures": figures, "targets": targets, "notes": notes}
