"""Issue 20, point 7: times compared across machines are on Redis's clock.

A machine whose clock is off (an hour ahead, ten minutes behind) must not show a
negative "seen ago", a queue wait of hours, or a deploy wait bound that is spent
(or never spent) when the graph resumes elsewhere.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import anyio
import msgspec
import pytest
import redis

from contracts import StreamsConfig
from deploystream.cli.ops import snapshot
from deploystream.keys import ExecutorKeys, OrchestratorKeys, Trust
from deploystream.redis_conn import connect
from executor.settings import ExecutorSettings
from executor.worker import Executor
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_provision_job
from orchestrator.run import run_deploy_graph
from orchestrator.state import exit_code
from tests.graph_support import ScriptedGateway, make_settings
from tests.harness import Executors

HOUR = 3600.0


def test_the_deploy_wait_deadline_is_on_redis_clock(tmp_path: Path, keys_dir: Path) -> None:
    # Redis (and so every other machine) is an hour behind this one.
    gateway = ScriptedGateway(hang_before_result=True, redis_clock_skew=-HOUR)
    settings = make_settings(tmp_path, queue_allowance_s=0.6, checkpoint_every_s=0.25)
    keys = OrchestratorKeys.load(keys_dir)

    async def go() -> dict[str, object]:
        before = await gateway.redis_time()
        with anyio.fail_after(15):
            final = await run_deploy_graph(
                {
                    "project": {"name": "shop"},
                    "repo": "file:///srv/git/shop.git",
                    "timeout_s": 1,
                    "service_port": 8000,
                },
                gateway=gateway,
                keys=keys,
                settings=settings,
                thread_id="req-clock",
            )
        return {"before": before, **final}

    started = time.monotonic()
    final = anyio.run(go)
    assert final["outcome"] == "wait_exceeded" and exit_code(final) == 1  # type: ignore[arg-type]
    # The checkpointed deadline is Redis's time at submission + timeout + allowance ...
    deadline = float(final["wait_deadline"])  # type: ignore[arg-type]
    assert 0 <= deadline - (float(final["before"]) + 1.6) < 2  # type: ignore[arg-type]
    # ... and it was compared on Redis's clock: spent after 1.6 s, not at once.
    assert 1.6 <= time.monotonic() - started < 10


def test_stream_client_now_is_redis_time(redis_url: str, config: StreamsConfig) -> None:
    r = redis.Redis.from_url(redis_url)
    sec, usec = r.time()
    r.close()

    async def now() -> float:
        client = connect(redis_url)
        try:
            return await StreamClient(client, config).redis_time()
        finally:
            await client.aclose()

    assert abs(anyio.run(now) - (sec + usec / 1e6)) < 2


def test_status_seen_ago_compares_on_redis_clock(
    redis_url: str, config: StreamsConfig, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ExecutorSettings(name="ex-ahead", project_dir=Path(__file__).parent / "ansible")
    real_time = time.time

    async def presence_from_a_machine_an_hour_ahead() -> None:
        client = connect(redis_url)
        try:
            ex = Executor(client, config, settings, ExecutorKeys.load(keys_dir))
            monkeypatch.setattr(time, "time", lambda: real_time() + HOUR)
            key = config.executor_key("ex-ahead")
            async with anyio.create_task_group() as tg:
                tg.start_soon(ex._presence_loop)
                with anyio.fail_after(10):
                    while not await client.exists(key):
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        finally:
            monkeypatch.setattr(time, "time", real_time)
            await client.aclose()

    anyio.run(presence_from_a_machine_an_hour_ahead)

    async def status() -> dict[str, object]:
        client = connect(redis_url)
        try:
            return await snapshot(client, config, Trust.load(keys_dir))
        finally:
            await client.aclose()

    snap = anyio.run(status)
    (ex,) = snap["executors"]  # type: ignore[misc]
    assert 0 <= ex["seen_ago_s"] < 10, ex


@pytest.mark.slow
def test_queue_wait_is_measured_on_redis_clock(
    executors: Executors, redis_url: str, keys_dir: Path, config: StreamsConfig
) -> None:
    executors.project_dir = Path(__file__).parent / "ansible"
    ex = executors.start("ex-q", "--metrics-port", "0")
    logged = [json.loads(line) for line in ex.output().splitlines() if line.startswith("{")]
    port = next(r["port"] for r in logged if r["event"] == "executor.metrics")
    keys = OrchestratorKeys.load(keys_dir)
    # Built on a machine whose clock is ten minutes behind.
    job = build_provision_job(keys, server_handle="s", playbook="quick")
    job = msgspec.structs.replace(job, submitted_at=time.time() - 600)

    async def submit() -> str:
        client = connect(redis_url)
        try:
            return await StreamClient(client, config, keys).submit(job)
        finally:
            await client.aclose()

    anyio.run(submit)
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        if 'deploystream_queue_wait_seconds_count{kind="provision"} 1.0' in text:
            break
        time.sleep(0.1)
    line = next(
        ln for ln in text.splitlines() if ln.startswith("deploystream_queue_wait_seconds_sum")
    )
    assert float(line.split()[-1]) < 60, line
