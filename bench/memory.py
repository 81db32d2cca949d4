"""memory: executor RSS idle and with 20 running jobs; Redis memory per finished
request; proof that every per-request key expires.

- RSS (psutil): the executor process alone, and its whole process tree (the
  ``ansible-playbook`` processes of running jobs are children of it).
- Redis: ``used_memory`` before and after N finished no-op requests (full event
  streams: submitted, accepted, result; watermark; job entry), divided by N; and
  ``MEMORY USAGE`` of the keys of one real playbook request.
- TTL: after the runs, ``SCAN`` every key; each per-request key (``…{request_id}``
  hash-tagged keys and idempotency keys) must have a TTL > 0.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import psutil
import redis

from bench.common import Bench, bench_world, rnd, run_to_result

TARGET_IDLE_MB = 120.0
MB = 1024 * 1024


def _int(value: Any) -> int:
    return int(value or 0)


def _used_memory(r: redis.Redis) -> int:
    info: Any = r.info("memory")
    return int(info["used_memory"])


def _rss(pid: int) -> tuple[float, float, int]:
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    tree = own
    children = proc.children(recursive=True)
    for child in children:
        try:
            tree += child.memory_info().rss
        except psutil.Error:
            continue
    return own / MB, tree / MB, len(children)


async def _run_jobs(world: Bench, jobs: list[Any]) -> list[str]:
    async with world.client(max_connections=len(jobs) * 2 + 8) as client:
        out: list[str] = []

        async def one(job: Any) -> None:
            out.append((await run_to_result(client, job)).status)

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(one, job)
    return out


def _running(world: Bench, expected: int, timeout: float = 120) -> None:
    """Wait until ``expected`` ansible-playbook runs are under way (accepted)."""
    r = redis.Redis.from_url(world.url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            pending = 0
            for stream in world.config.job_streams:
                summary: Any = r.xpending(stream, world.config.groups.executors)
                pending += int(summary["pending"])
            if pending >= expected:
                return
            time.sleep(0.2)
    finally:
        r.close()
    raise RuntimeError("jobs did not start")


def _ttl_audit(world: Bench) -> dict[str, Any]:
    r = redis.Redis.from_url(world.url)
    cfg = world.config
    per_request = 0
    with_ttl = 0
    without: list[str] = []
    other: dict[str, int] = {}
    try:
        for key_b in r.scan_iter(count=1000):
            key = key_b.decode()
            ttl: Any = r.ttl(key)
            ttl = int(ttl)
            if "{" in key or key.startswith(cfg.streams.idempotency_prefix + ":"):
                per_request += 1
                if ttl > 0:
                    with_ttl += 1
                else:
                    without.append(key)
            else:
                other[key] = ttl
    finally:
        r.close()
    return {
        "per_request_keys": per_request,
        "per_request_keys_with_ttl": with_ttl,
        "per_request_keys_without_ttl": without[:10],
        "other_keys_ttl": other,  # -1: lives on (job streams, groups, control)
    }


def run(*, quick: bool = False) -> dict[str, Any]:
    running_jobs = 20
    n_requests = 300 if quick else 1000
    with bench_world() as world:
        proc = world.start_executor("ex-0", concurrency=running_jobs)
        time.sleep(3)
        idle_own, idle_tree, _ = _rss(proc.pid)

        peak_own = peak_tree = 0.0
        children = 0

        async def sample_while_running() -> None:
            nonlocal peak_own, peak_tree, children
            jobs = [world.job("sleep", sleep_s=8) for _ in range(running_jobs)]
            async with anyio.create_task_group() as tg:

                async def run_all() -> None:
                    statuses = await _run_jobs(world, jobs)
                    assert statuses == ["success"] * running_jobs, statuses
                    tg.cancel_scope.cancel()

                tg.start_soon(run_all)
                await anyio.to_thread.run_sync(_running, world, running_jobs)
                while True:
                    own, tree, kids = _rss(proc.pid)
                    if tree > peak_tree:
                        peak_own, peak_tree, children = own, tree, kids
                    await anyio.sleep(0.5)

        anyio.run(sample_while_running)
        after_own, _, _ = _rss(proc.pid)

        # One real playbook request's keys, as left after its result.
        r = redis.Redis.from_url(world.url)
        rid_key = next(iter(r.scan_iter(match=world.config.events_key("*"), count=1000)))
        real_keys = {
            k.decode(): _int(r.memory_usage(k))
            for k in r.scan_iter(match="*" + rid_key.decode().split(":", 1)[1], count=1000)
        }
        world.stop_executors()
        audit_real = _ttl_audit(world)

        # Redis memory per finished request: no-op executor, N requests.
        world.flush()
        world.start_executor("noop-0", concurrency=32, noop=True)
        anyio.run(_run_jobs, world, [world.job("noop") for _ in range(20)])  # warm-up
        r.memory_purge()
        before = _used_memory(r)
        jobs = [world.job("noop") for _ in range(n_requests)]

        async def windowed() -> None:
            it = iter(jobs)

            async def worker() -> None:
                for job in it:
                    await _run_jobs(world, [job])

            async with anyio.create_task_group() as tg:
                for _ in range(16):
                    tg.start_soon(worker)

        anyio.run(windowed)
        r.memory_purge()
        after = _used_memory(r)
        job_stream = world.config.streams.provision
        stream_bytes = _int(r.memory_usage(job_stream))
        stream_len = _int(r.xlen(job_stream))
        world.stop_executors()
        audit_noop = _ttl_audit(world)
        r.close()
    audit = {
        "per_request_keys": audit_real["per_request_keys"] + audit_noop["per_request_keys"],
        "per_request_keys_with_ttl": audit_real["per_request_keys_with_ttl"]
        + audit_noop["per_request_keys_with_ttl"],
        "per_request_keys_without_ttl": audit_real["per_request_keys_without_ttl"]
        + audit_noop["per_request_keys_without_ttl"],
        "other_keys_ttl": {**audit_real["other_keys_ttl"], **audit_noop["other_keys_ttl"]},
    }
    per_request = (after - before) / n_requests
    figures = {
        "executor_idle_rss_mb": rnd(idle_own, 1),
        "executor_idle_tree_rss_mb": rnd(idle_tree, 1),
        "running_jobs": running_jobs,
        "executor_running_rss_mb": rnd(peak_own, 1),
        "executor_running_tree_rss_mb": rnd(peak_tree, 1),
        "running_tree_processes": children,
        "executor_rss_after_runs_mb": rnd(after_own, 1),
        "redis_bytes_per_finished_noop_request": round(per_request),
        "redis_job_stream_bytes_per_entry": round(stream_bytes / max(1, stream_len)),
        "job_stream_entries_kept": stream_len,
        "real_request_keys_bytes": real_keys,
        "ttl_audit": audit,
    }
    ttl_ok = audit["per_request_keys"] > 0 and not audit["per_request_keys_without_ttl"]
    targets = [
        {"what": "idle executor RSS (process)", "target": f"<= {TARGET_IDLE_MB:.0f} MB",
         "value": figures["executor_idle_rss_mb"], "met": idle_own <= TARGET_IDLE_MB},
        {"what": "every per-request key has a TTL", "target": "all",
         "value": f"{audit['per_request_keys_with_ttl']}/{audit['per_request_keys']}",
         "met": ttl_ok},
    ]  # fmt: skip
    notes = [
        "job-stream entries are not per-request keys: the stream is capped by "
        "jobs-maxlen (MAXLEN ~), so a finished job's entry stays until trimmed",
    ]
    return {"benchmark": "memory", "figures": figures, "targets": targets, "notes": notes}
