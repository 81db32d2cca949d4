"""The backbone end to end: real executor processes, real Redis, real ansible-runner."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import msgspec
import redis

from contracts import Accepted, HostResult, Result, StreamsConfig, Submitted, TaskStarted, encode
from deploystream.keys import OrchestratorKeys, init_keys
from orchestrator.job_builder import build_provision_job
from tests.harness import Executors, deployctl, read_events, wait_for_result

ANSIBLE_DIR = Path(__file__).parent / "ansible"


def _submit(
    client: redis.Redis, config: StreamsConfig, keys_dir: Path, playbook: str, **kw: object
) -> str:
    """Submit through the real client (sync wrapper for tests)."""
    import anyio

    from deploystream.redis_conn import connect
    from orchestrator.client import StreamClient

    keys = OrchestratorKeys.load(keys_dir)
    # One server per job: they run side by side (provisions of one server would queue).
    handle = f"srv-{os.urandom(4).hex()}"
    job = build_provision_job(keys, server_handle=handle, playbook=playbook, **kw)  # type: ignore[arg-type]

    async def go() -> str:
        r = connect(config.redis.url)
        try:
            return await StreamClient(r, config, keys).submit(job)
        finally:
            await r.aclose()

    return anyio.run(go)


def assert_complete(events: list, request_id: str) -> Result:
    """seq gap-free per attempt, exactly one result, event_count matches."""
    results = [e for e in events if isinstance(e, Result)]
    assert len(results) == 1, results
    result = results[0]
    mine = [e for e in events if e.attempt == result.attempt and e.seq > 0]
    assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
    assert result.event_count == len(mine)
    assert all(e.request_id == request_id for e in events)
    assert isinstance(events[0], Submitted)
    return result


def test_ten_jobs_three_executors(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    executors.project_dir = ANSIBLE_DIR
    for i in range(3):
        executors.start(f"ex{i}", "--concurrency", "2")
    ids = [_submit(rclient, config, keys_dir, "quick") for _ in range(10)]
    workers = set()
    for rid in ids:
        events = wait_for_result(rclient, config, rid)
        result = assert_complete(events, rid)
        assert result.status == "success", result
        workers.update(e.executor for e in events if isinstance(e, Accepted))
        assert any(isinstance(e, HostResult) for e in events)
    assert len(workers) > 1, workers
    for stream in config.job_streams:
        assert rclient.xpending(stream, config.groups.executors)["pending"] == 0


def test_late_reader_replays_everything_via_cli(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    redis_url: str,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")
    rid = _submit(rclient, config, keys_dir, "quick")
    stored = wait_for_result(rclient, config, rid)
    out = deployctl("tail", rid, "--json", redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["type"] == "submitted"
    assert lines[-1]["type"] == "result" and lines[-1]["status"] == "success"
    assert [(x["type"], x["seq"]) for x in lines] == [
        (msgspec.inspect.type_info(type(e)).tag, e.seq)
        for e in stored  # type: ignore[attr-defined]
    ]
    text = deployctl("tail", rid, redis_url=redis_url, keys_dir=keys_dir)
    assert "TASK Say hello" in text.stdout and "SUCCESS" in text.stdout


def test_failing_task_names_task_and_host_and_exits_1(
    executors: Executors, redis_url: str, keys_dir: Path
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")
    out = deployctl(
        "provision",
        "--server",
        "s1",
        "--playbook",
        "fail_task",
        "--json",
        redis_url=redis_url,
        keys_dir=keys_dir,
    )
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["type"] == "result" and result["status"] == "failed"
    assert result["failed_task"] == "Break on purpose"
    assert result["failed_hosts"] == ["localhost"]
    # The why (the first line of the task's message); the where is in its own fields.
    assert result["error"] == "non-zero return code"


def _garbage_entries(config: StreamsConfig, keys_dir: Path) -> list[tuple[dict[str, bytes], str]]:
    keys = OrchestratorKeys.load(keys_dir)
    stream = config.streams.deploy

    def signed(payload: bytes) -> dict[str, bytes]:
        return {
            "job": payload,
            "sig": keys.sign(stream, payload).encode(),
            "kid": keys.kid.encode(),
        }

    good = build_provision_job(keys, server_handle="srv", playbook="quick", request_id="tamper1")
    good_payload = encode(good)
    tampered = signed(good_payload)
    tampered["job"] = good_payload.replace(b'"srv"', b'"SRV"')
    unsigned = {
        "job": encode(
            build_provision_job(keys, server_handle="s", playbook="quick", request_id="unsigned1")
        )
    }
    moved = {
        "job": good_payload,
        "sig": keys.sign("ansible.provision", good_payload).encode(),
        "kid": keys.kid.encode(),
    }
    return [
        (signed(b"\xff\xfenot json at all"), "invalid job"),
        (signed(b'{"kind":"teleport","request_id":"unknownkind1"}'), "invalid job"),
        (signed(b'{"kind":"deploy","request_id":"missing1","submitted_at":1}'), "missing"),
        (
            signed(
                b'{"kind":"provision","request_id":"types1","submitted_at":"soon",'
                b'"playbook":"quick","server_handle":"x"}'
            ),
            "Expected",
        ),
        ({"nothing": b"here"}, "no 'job' field"),
        (tampered, "bad signature"),
        (unsigned, "unsigned"),
        (moved, "bad signature"),
    ]


def test_garbage_is_dead_lettered_and_executor_keeps_serving(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")
    stream = config.streams.deploy
    garbage = _garbage_entries(config, keys_dir)
    added = [rclient.xadd(stream, fields) for fields, _ in garbage]
    rid = _submit(rclient, config, keys_dir, "quick")
    assert assert_complete(wait_for_result(rclient, config, rid), rid).status == "success"
    deadline = time.monotonic() + 30
    dead_key = config.dead_key(stream)
    while time.monotonic() < deadline and rclient.xlen(dead_key) < len(garbage):
        time.sleep(0.1)
    dead = rclient.xrange(dead_key)
    assert len(dead) == len(garbage)
    by_source = {entry[b"source_id"]: entry for _, entry in dead}
    for (fields, fragment), entry_id in zip(garbage, added, strict=True):
        entry = by_source[entry_id]
        reason = entry[b"reason"].decode()
        assert fragment in reason, (fragment, reason)
        for k, v in fields.items():  # the original fields are kept
            assert entry[k.encode() if isinstance(k, str) else k] == v
        assert entry[b"delivery_count"] == b"1"
    assert rclient.xpending(stream, config.groups.executors)["pending"] == 0
    # A rejected result is published where a request id is readable.
    for rid_bad in ("missing1", "types1", "unknownkind1", "tamper1", "unsigned1"):
        events = read_events(rclient, config, rid_bad)
        assert events and isinstance(events[-1], Result) and events[-1].status == "rejected"
    assert ex_alive(executors)


def ex_alive(executors: Executors) -> bool:
    return all(ep.proc.poll() is None for ep in executors.procs)


def test_unknown_key_is_rejected(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")
    other = tmp_path / "other-keys"
    init_keys(other)
    rid = _submit(rclient, config, other, "quick")
    events = wait_for_result(rclient, config, rid)
    assert events[-1].status == "rejected" and "unknown key" in events[-1].error
    assert not any(isinstance(e, TaskStarted) for e in events)


def test_cli_bad_input_exits_2_and_submits_nothing(
    redis_url: str, keys_dir: Path, rclient: redis.Redis, config: StreamsConfig
) -> None:
    cases = [
        ["deploy", "--project", "p", "--repo", "https://x/y.git", "--env", "NOEQUALS"],
        ["deploy", "--project", "p", "--repo", "https://x/y.git", "--host", "a;rm -rf /"],
        ["deploy", "--project", "p", "--repo", "ftp://x/y"],
        ["deploy", "--project", "p", "--repo", "https://x/y.git", "--playbook", "../../etc/x"],
        [
            "deploy",
            "--project",
            "p",
            "--repo",
            "https://x/y.git",
            "--extra-var",
            "ansible_connection=ssh",
        ],
        ["deploy", "--project", "p", "--repo", "https://x/y.git", "--service-port", "0"],
        ["provision"],
        ["--redis-url", "http://nope", "tail", "x"],
    ]
    for args in cases:
        out = deployctl(*args, redis_url=redis_url, keys_dir=keys_dir)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.strip(), args
        assert "Traceback" not in out.stderr
    for stream in config.job_streams:
        assert rclient.exists(stream) == 0 or rclient.xlen(stream) == 0


def test_unknown_playbook_is_refused_when_executors_announce(
    executors: Executors,
    redis_url: str,
    keys_dir: Path,
    rclient: redis.Redis,
    config: StreamsConfig,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not list(rclient.scan_iter("deploystream.executor:*")):
        time.sleep(0.1)
    out = deployctl(
        "provision",
        "--server",
        "s",
        "--playbook",
        "no_such_book",
        redis_url=redis_url,
        keys_dir=keys_dir,
    )
    assert out.returncode == 2 and "no_such_book" in out.stderr
    assert rclient.xlen(config.streams.provision) == 0


def test_redis_unreachable_exits_3(keys_dir: Path) -> None:
    from deploystream.embedded_redis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    # Valid input (it is checked first, without Redis), then Redis is not there.
    argv = ["--project", "p", "--repo", "https://x/y.git", "--service-port", "8000"]
    out = deployctl("deploy", *argv, redis_url=url, keys_dir=keys_dir)
    assert out.returncode == 3
    assert url in out.stderr


def test_playbooks_run_nicer_than_the_executor(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    """A saturated CPU must delay Ansible, not the executor's leases and live events."""
    import os

    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")  # inherits our niceness
    rid = _submit(rclient, config, keys_dir, "niceness")
    events = wait_for_result(rclient, config, rid)
    assert assert_complete(events, rid).status == "success"
    expected = min(19, os.nice(0) + config.executor.playbook_nice)
    assert config.executor.playbook_nice == 10
    reports = [e.msg for e in events if isinstance(e, HostResult) and "niceness=" in e.msg]
    assert reports == [f"niceness={expected}"], [e for e in events if isinstance(e, HostResult)]
