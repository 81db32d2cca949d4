"""latency: event ``ts`` (set by the executor when it translates a runner event) ->
the moment a tailing client (``StreamClient.events``) has it decoded, p50/p99/max,
with 1 and 20 concurrent jobs on one executor process.

The playbook (``latency.yml``) is a debug loop that pauses between items, so events
arrive spread over time as in a real deploy. Executor and client share the host
clock (one machine), so ``time.time() - event.ts`` is the true delay.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from bench.common import Bench, bench_world, percentile, rnd
from contracts import Result, Submitted

TARGET_P99_MS = 10.0


async def _tail_jobs(
    world: Bench, jobs: int, ticks: int, pause_s: float
) -> tuple[list[float], list[float], list[float]]:
    """Per event: total delay, executor -> stored in Redis, Redis -> client (ms).

    The split uses the stream entry id, whose first part is Redis's clock (ms) at XADD.
    """
    delays: list[float] = []
    to_redis: list[float] = []
    to_client: list[float] = []
    async with world.client(max_connections=jobs * 2 + 8) as client:

        async def one() -> None:
            rid = await client.submit(world.job("latency", ticks=ticks, pause_s=pause_s))
            async for entry_id, event in client.events(rid):
                now = time.time()
                if not isinstance(event, Submitted):
                    stored = int(entry_id.split("-", 1)[0]) / 1000
                    delays.append((now - event.ts) * 1000)
                    to_redis.append((stored - event.ts) * 1000)
                    to_client.append((now - stored) * 1000)
                if isinstance(event, Result):
                    assert event.status == "success", event
                    return

        async with anyio.create_task_group() as tg:
            for _ in range(jobs):
                tg.start_soon(one)
    return delays, to_redis, to_client


def _case(world: Bench, jobs: int, ticks: int, pause_s: float) -> dict[str, Any]:
    delays, to_redis, to_client = anyio.run(_tail_jobs, world, jobs, ticks, pause_s)
    return {
        "jobs": jobs,
        "events": len(delays),
        "p50_ms": rnd(percentile(delays, 50), 2),
        "p99_ms": rnd(percentile(delays, 99), 2),
        "max_ms": rnd(max(delays), 2),
        # where the time goes (entry-id clock has 1 ms resolution)
        "executor_to_redis_p50_ms": rnd(percentile(to_redis, 50), 1),
        "executor_to_redis_p99_ms": rnd(percentile(to_redis, 99), 1),
        "redis_to_client_p50_ms": rnd(percentile(to_client, 50), 1),
        "redis_to_client_p99_ms": rnd(percentile(to_client, 99), 1),
    }


def run(*, quick: bool = False) -> dict[str, Any]:
    ticks = 20 if quick else 40
    pause = 0.05
    with bench_world() as world:
        world.start_executor("ex-0", concurrency=20)
        _case(world, 1, 5, pause)  # warm-up
        single = _case(world, 1, ticks, pause)
        many = _case(world, 20, ticks, pause)
    figures = {"ticks_per_job": ticks, "pause_s": pause, "one_job": single, "twenty_jobs": many}
    targets = [
        {"what": "p99, 1 job", "target": f"<= {TARGET_P99_MS} ms", "value": single["p99_ms"],
         "met": single["p99_ms"] <= TARGET_P99_MS},
        {"what": "p99, 20 concurrent jobs", "target": f"<= {TARGET_P99_MS} ms",
         "value": many["p99_ms"], "met": many["p99_ms"] <= TARGET_P99_MS},
    ]  # fmt: skip
    return {"benchmark": "latency", "figures": figures, "targets": targets, "notes": []}
