"""`deployctl status --json` against a running system: two executors, a queued job."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts import (
    Event,
    HostResult,
    HostSummary,
    Result,
    StreamsConfig,
    TaskStarted,
)
from contracts.events import HostStatus
from deploystream.keys import ExecutorKeys, OrchestratorKeys, Trust
from orchestrator.job_builder import build_provision_job
from tests.faults_support import fault_env
from tests.forge_support import write_batch, write_plain
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


@pytest.mark.slow
def test_status_shows_each_host_of_a_running_request(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with fault_env(tmp_path, concurrency=1) as env:
        env.start_executor("ex-a")
        # Two local aliases: two inventory hosts of one job.
        rid = env.submit(
            "two_hosts_hold", hosts=["127.0.0.1"], extra_vars={"release": str(release)}
        )
        # Both hosts have answered "Change" once "Hold" starts (the linear strategy).
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Hold")
        out = env.deployctl("status", "--json")
        assert out.returncode == 0, out.stderr
        running = json.loads(out.stdout)["running"]
        entry = next(p for p in running if p["request_id"] == rid)
        assert entry["task"] == "Hold" and entry["partial"] is False
        counts = {"ok": 1, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0}
        assert entry["hosts"] == {
            "localhost": {"status": "running", **counts},
            "127.0.0.1": {"status": "running", **counts},
        }
        human = env.deployctl("status")
        assert human.returncode == 0, human.stderr
        assert "localhost: running ok=1 changed=1" in human.stdout, human.stdout
        assert "127.0.0.1: running ok=1 changed=1" in human.stdout, human.stdout
        release.touch()
        assert env.wait_result(rid).status == "success"


def test_running_hosts_reads_only_new_events_within_its_bound(
    redis_url: str,
    config: StreamsConfig,
    rclient: redis.Redis,
    keys_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import anyio

    from deploystream.cli import running_hosts
    from deploystream.redis_conn import connect

    monkeypatch.setattr(running_hosts, "EVENTS_PER_REFRESH", 2)
    monkeypatch.setattr(running_hosts, "_CHUNK", 2)
    rid = "r-hosts"
    key = config.events_key(rid)
    signer = ExecutorKeys.load(keys_dir).signer

    def publish(*events: Event) -> None:
        for ev in events:  # each a batch of one, signed as an executor does
            write_batch(rclient, key, [ev], signer)

    def result(host: str, status: HostStatus, seq: int) -> HostResult:
        return HostResult(request_id=rid, seq=seq, ts=1.0, host=host, task="t", status=status)

    publish(result("h1", "changed", 1), result("h2", "unreachable", 2), result("h1", "ok", 3))
    reader = running_hosts.RunningHosts(config, Trust.load(keys_dir))

    async def refresh(*ids: str) -> dict[str, dict[str, Any]]:
        r = connect(redis_url)
        try:
            return await reader.hosts(r, list(ids))
        finally:
            await r.aclose()

    first = anyio.run(refresh, rid)[rid]  # two of three events: the bound
    assert first["partial"] is True
    assert first["hosts"] == {
        "h1": {
            "status": "running",
            "ok": 1,
            "changed": 1,
            "failed": 0,
            "unreachable": 0,
            "skipped": 0,
        },
        "h2": {
            "status": "unreachable",
            "ok": 0,
            "changed": 0,
            "failed": 0,
            "unreachable": 1,
            "skipped": 0,
        },
    }
    summaries = {
        "h1": HostSummary(status="changed"),
        "h2": HostSummary(status="unreachable"),
        "h3": HostSummary(status="not_run"),
    }
    publish(Result(request_id=rid, seq=4, ts=2.0, status="failed", hosts=summaries))
    second = anyio.run(refresh, rid)[rid]  # the third event and the result: counted once each
    assert second["partial"] is False
    hosts = second["hosts"]
    assert {h: v["status"] for h, v in hosts.items()} == {
        "h1": "changed",
        "h2": "unreachable",
        "h3": "not_run",
    }
    assert hosts["h1"]["ok"] == 2 and hosts["h1"]["changed"] == 1


def test_running_hosts_ignores_events_no_executor_signed(
    redis_url: str, config: StreamsConfig, rclient: redis.Redis, keys_dir: Path
) -> None:
    """Before: ``status`` counted a host result (or a result) written with a Redis
    credential alone, as ``tail`` no longer does."""
    import anyio

    from deploystream.cli.running_hosts import RunningHosts
    from deploystream.redis_conn import connect

    rid = "r-forged-hosts"
    key = config.events_key(rid)
    signer = ExecutorKeys.load(keys_dir).signer
    seen = HostResult(request_id=rid, seq=1, ts=1.0, host="h1", task="t", status="ok")
    write_batch(rclient, key, [seen], signer)
    forged = HostResult(request_id=rid, seq=2, ts=1.0, host="h1", task="t", status="failed")
    write_plain(rclient, key, forged)
    write_batch(rclient, key, [forged])  # a made-up signature
    planted = HostResult(request_id=rid, seq=2, ts=1.0, host="evil", task="t", status="ok")
    write_plain(rclient, key, planted)
    fake_end = Result(request_id=rid, seq=3, ts=2.0, status="success")
    write_plain(rclient, key, fake_end)

    async def refresh() -> dict[str, Any]:
        r = connect(redis_url)
        try:
            return (await RunningHosts(config, Trust.load(keys_dir)).hosts(r, [rid]))[rid]
        finally:
            await r.aclose()

    hosts = anyio.run(refresh)["hosts"]
    assert list(hosts) == ["h1"], hosts
    assert hosts["h1"]["status"] == "running" and hosts["h1"]["ok"] == 1, hosts
    assert hosts["h1"]["failed"] == 0, hosts
