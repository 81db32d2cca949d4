"""`deployctl status --json` against a running system: two executors, a queued job."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import redis

from contracts import StreamsConfig
from deploystream.keys import OrchestratorKeys
from orchestrator.job_builder import build_provision_job
from tests.harness import Executors, deployctl, wait_for_result

ANSIBLE_DIR = Path(__file__).parent / "ansible"


def _submit(config: StreamsConfig, keys_dir: Path, **extra_vars: object) -> str:
    import anyio

    from deploystream.redis_conn import connect
    from orchestrator.client import StreamClient

    keys = OrchestratorKeys.load(keys_dir)
    # One server per job: they run side by side (provisions of one server would queue).
    job = build_provision_job(
        keys, server_handle=f"s-{os.urandom(4).hex()}", playbook="sleep", extra_vars=extra_vars
    )

    async def go() -> str:
        r = connect(config.redis.url)
        try:
            return await StreamClient(r, config, keys).submit(job)
        finally:
            await r.aclose()

    return anyio.run(go)


def test_status_json_two_executors_and_a_queued_job(
    executors: Executors,
    redis_url: str,
    keys_dir: Path,
    config: StreamsConfig,
    rclient: redis.Redis,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a", "--concurrency", "1")
    executors.start("ex-b", "--concurrency", "1")
    ids = [_submit(config, keys_dir, sleep_s=12) for _ in range(3)]
    deadline = time.monotonic() + 60
    snap: dict = {}
    while time.monotonic() < deadline:
        out = deployctl("status", "--json", redis_url=redis_url, keys_dir=keys_dir)
        assert out.returncode == 0, out.stderr
        snap = json.loads(out.stdout)
        if len(snap["running"]) == 2:
            break
        time.sleep(0.3)
    assert {e["name"] for e in snap["executors"]} == {"ex-a", "ex-b"}
    assert {p["owner"] for p in snap["running"]} == {"ex-a", "ex-b"}
    assert {p["request_id"] for p in snap["running"]} < set(ids)
    provision = next(s for s in snap["streams"] if s["stream"] == config.streams.provision)
    assert provision["length"] == 3
    assert provision["group_info"]["pending"] == 2
    assert provision["group_info"]["lag"] == 1  # the third job waits for a free executor
    assert {c["name"] for c in provision["consumers"]} == {"ex-a", "ex-b"}
    assert snap["dead_letters"] == 0
    human = deployctl("status", redis_url=redis_url, keys_dir=keys_dir)
    assert human.returncode == 0 and "ex-a" in human.stdout and "ex-b" in human.stdout
    for rid in ids:
        events = wait_for_result(rclient, config, rid, timeout=120)
        assert events[-1].status == "success"  # type: ignore[union-attr]


def test_status_shows_deploy_requests_its_group_and_the_orchestrators(
    redis_url: str, keys_dir: Path, config: StreamsConfig, rclient: redis.Redis
) -> None:
    stream, group = config.streams.requests, config.groups.orchestrators
    rclient.xgroup_create(stream, group, id="0", mkstream=True)
    rclient.xadd(stream, {"request": b"{}"})
    rclient.xadd(stream, {"request": b"{}"})
    # An orchestrator service reads through the group as this consumer does.
    rclient.xreadgroup(group, "orch-1", {stream: ">"}, count=1)
    out = deployctl("status", "--json", redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    requests = snap["requests"]
    assert (requests["stream"], requests["group"], requests["length"]) == (stream, group, 2)
    assert requests["group_info"]["pending"] == 1 and requests["group_info"]["lag"] == 1
    assert [o["name"] for o in snap["orchestrators"]] == ["orch-1"]
    human = deployctl("status", redis_url=redis_url, keys_dir=keys_dir)
    assert human.returncode == 0, human.stderr
    row = next(line for line in human.stdout.splitlines() if stream in line)
    assert group in row and "orch-1" in row, human.stdout
