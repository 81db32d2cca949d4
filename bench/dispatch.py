"""dispatch: no-op job round trips per second, one executor process, beside the floor
and the peers, on the same Redis in the same run.

Every system runs the same client loop: WINDOW coroutines, each submits one job and
waits for its result, N jobs in all (after a warm-up). deploystream's client is the
real one (``StreamClient.submit`` + ``StreamClient.events`` until ``result``); its
executor is :mod:`bench.noop_executor` (the full dispatch path minus Ansible).
"""

from __future__ import annotations

import cProfile
import sys
import time
import uuid
from typing import Any

import anyio
import psutil
import redis.asyncio as aioredis

from bench import floor, peers_env, profiling
from bench.common import Bench, bench_world, rnd, run_to_result
from bench.noop_executor import PROFILE_ENV
from contracts import encode

TARGET_FLOOR = 0.7
TARGET_PEER = 3.0
TARGET_ABS = 3000


async def _drive_deploystream(world: Bench, n: int, window: int) -> float:
    jobs = [world.job("noop") for _ in range(n)]
    async with world.client(max_connections=window + 8) as client:
        warm = [world.job("noop") for _ in range(min(200, n))]

        async def run(batch: list[Any]) -> float:
            it = iter(batch)

            async def worker() -> None:
                for job in it:
                    await run_to_result(client, job)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(window):
                    tg.start_soon(worker)
            return time.perf_counter() - t0

        await run(warm)
        return await run(jobs)


async def _drive_floor(url: str, n: int, window: int, payload: bytes) -> float:
    r = aioredis.Redis.from_url(url, max_connections=window + 8)
    try:

        async def run(count: int) -> float:
            ids = iter([uuid.uuid4().hex for _ in range(count)])

            async def worker() -> None:
                for jid in ids:
                    await floor.round_trip(r, jid, payload)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(window):
                    tg.start_soon(worker)
            return time.perf_counter() - t0

        await run(min(200, n))
        return await run(n)
    finally:
        await r.aclose()


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def deploystream_rate(world: Bench, n: int, window: int, cpu: dict[str, float]) -> float:
    """Jobs/s; adds CPU ms per job of executor, client and Redis to ``cpu``."""
    ex = psutil.Process(world.start_executor("noop-0", concurrency=window, noop=True).pid)
    assert world.server.proc is not None
    parts = {
        "executor": ex,
        "client": psutil.Process(),
        "redis": psutil.Process(world.server.proc.pid),
    }
    try:
        before = {k: _cpu(p) for k, p in parts.items()}
        elapsed = anyio.run(_drive_deploystream, world, n, window)
        # (includes the warm-up's jobs: divide by what actually ran)
        warm = min(200, n)
        for k, p in parts.items():
            cpu[k] = (_cpu(p) - before[k]) * 1000 / (n + warm)
    finally:
        world.stop_executors()
    return n / elapsed


def floor_rate(world: Bench, n: int, window: int) -> float:
    payload = encode(world.job("noop"))
    proc = world._spawn("floor", [sys.executable, "-m", "bench.floor", world.url])
    try:
        time.sleep(0.5)
        elapsed = anyio.run(_drive_floor, world.url, n, window, payload)
    finally:
        world.stop_executors()
    del proc
    return n / elapsed


def profiled(world: Bench, n: int, window: int) -> dict[str, Any]:
    """One more deploystream pass with the executor and the client under cProfile
    (CPU clock): where each one's CPU goes, per job. Not timed."""
    path = world.base / "noop-executor.prof"
    world.flush()
    world.start_executor("noop-prof", concurrency=window, noop=True, **{PROFILE_ENV: str(path)})
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.enable()
        anyio.run(_drive_deploystream, world, n, window)
        profiler.disable()
    finally:
        world.stop_executors()
    jobs = n + min(200, n)  # the warm-up's jobs ran too
    return {"executor": profiling.top(path, jobs), "client": profiling.top(profiler, jobs)}


def run(*, quick: bool = False) -> dict[str, Any]:
    n = 1000 if quick else 3000
    # 32 in flight: the executor's pool (redis_conn.connect: 64 connections) must hold
    # every running job's call plus its loops; see the note in docs/benchmarks.md.
    window = 32
    rounds = 1 if quick else 2
    ds: list[float] = []
    fl: list[float] = []
    peers: dict[str, float] = {}
    notes: list[str] = []
    cpu: dict[str, float] = {}
    with bench_world() as world:
        for _ in range(rounds):  # alternate: the machine's noise hits both alike
            world.flush()
            fl.append(floor_rate(world, n, window))
            world.flush()
            ds.append(deploystream_rate(world, n, window, cpu))
        profile = profiled(world, n, window)
        try:
            peers_env.ensure(quiet=True)
        except Exception as exc:  # peers are context; their absence must not hide ours
            notes.append(f"peers venv unavailable: {exc}")
        else:
            for script in ("arq_roundtrip.py", "taskiq_roundtrip.py"):
                world.flush()
                try:
                    out = peers_env.run_peer(script, world.url, n, window)
                except Exception as exc:
                    notes.append(f"{script} not measured: {str(exc)[-300:]}")
                    continue
                peers[str(out["peer"])] = float(out["jobs_per_s"])
    rate = max(ds)
    floor_best = max(fl)
    best_peer = max(peers.values()) if peers else float("nan")
    figures = {
        "jobs": n,
        "window": window,
        "rounds": rounds,
        "jobs_per_s": rnd(rate, 1),
        "floor_jobs_per_s": rnd(floor_best, 1),
        "peers_jobs_per_s": {k: rnd(v, 1) for k, v in peers.items()},
        "ratio_vs_floor": rnd(rate / floor_best),
        "ratio_vs_best_peer": rnd(rate / best_peer) if peers else None,
        "cpu_ms_per_job": {k: rnd(v, 2) for k, v in cpu.items()},
        "all_rounds": {"deploystream": [rnd(x, 1) for x in ds], "floor": [rnd(x, 1) for x in fl]},
    }
    targets = [
        {"what": "vs floor (bare redis-py)", "target": f">= {TARGET_FLOOR}x",
         "value": figures["ratio_vs_floor"], "met": rate / floor_best >= TARGET_FLOOR},
        {"what": "vs best peer", "target": f">= {TARGET_PEER}x",
         "value": figures["ratio_vs_best_peer"],
         "met": bool(peers) and rate / best_peer >= TARGET_PEER},
        {"what": "absolute (DESIGN)", "target": f">= {TARGET_ABS} jobs/s",
         "value": figures["jobs_per_s"], "met": rate >= TARGET_ABS},
    ]  # fmt: skip
    return {
        "benchmark": "dispatch",
        "figures": figures,
        "targets": targets,
        "notes": notes,
        "profile": profile,
    }
