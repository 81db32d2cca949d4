"""Deploy the sample service for real: CLI -> Redis -> executor processes -> Ansible."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import redis

from contracts import StreamsConfig, TaskStarted
from deploystream.embedded_redis import free_port
from deploystream.sample_service import create_sample_repo, stop_service
from tests.harness import DEPLOYCTL, ENV_FILE_MODE, Executors, cli_env, deployctl, read_events


@pytest.fixture
def sample_repo(tmp_path: Path) -> str:
    return create_sample_repo(tmp_path / "sample-repo")


@pytest.fixture
def deployed(executors: Executors):
    names: list[str] = []
    yield names
    for name in names:
        stop_service(executors.apps_root / name)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_deploy_sample_service_live_through_two_executors(
    executors: Executors,
    sample_repo: str,
    deployed: list[str],
    redis_url: str,
    keys_dir: Path,
    config: StreamsConfig,
    rclient: redis.Redis,
) -> None:
    executors.start("ex-a")
    executors.start("ex-b")
    port = free_port()
    deployed.append("sample")
    proc = subprocess.Popen(
        [
            DEPLOYCTL,
            "deploy",
            "--project",
            "sample",
            "--repo",
            sample_repo,
            "--service-port",
            str(port),
            "--secret",
            "GREETING=hello-from-env",
            "--json",
        ],
        env=cli_env(redis_url, keys_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    live_before_result: list[str] = []
    lines = []
    for line in proc.stdout:
        obj = json.loads(line)
        lines.append(obj)
        if obj["type"] in ("accepted", "task_started", "host_result"):
            # Was the terminal result already written when this event reached us?
            key = config.events_key(obj["request_id"])
            last = rclient.xrevrange(key, count=1)
            if last and last[0][1][b"type"] != b"result":
                live_before_result.append(obj["type"])
    assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
    result = next(line for line in lines if line["type"] == "result")
    assert lines[-1]["type"] == "post_deploy"  # the graph's post-deploy steps follow
    assert result["type"] == "result" and result["status"] == "success", result
    assert result["deployed_url"] == f"http://localhost:{port}"
    assert {"accepted", "task_started", "host_result"} <= set(live_before_result)
    # The service answers with its .env applied, and .env is private.
    status, body = _get(f"http://127.0.0.1:{port}/")
    assert status == 200 and json.loads(body)["greeting"] == "hello-from-env"
    assert _get(f"http://127.0.0.1:{port}/health")[0] == 200
    env_file = executors.apps_root / "sample" / ".env"
    assert env_file.stat().st_mode & 0o777 == ENV_FILE_MODE
    # Gap-free and complete as stored.
    events = read_events(rclient, config, result["request_id"])
    numbered = [e.seq for e in events if e.seq > 0]
    assert numbered == list(range(1, result["event_count"] + 1))
    tasks = [e.task for e in events if isinstance(e, TaskStarted)]
    assert "Fetch repository" in tasks and "Wait for health check" in tasks
    # The run directories are gone: nothing (secrets, runner artifacts) left behind.
    assert executors.work_left() == []


def test_failed_health_check_is_failed_not_success(
    executors: Executors, tmp_path: Path, deployed: list[str], redis_url: str, keys_dir: Path
) -> None:
    executors.start("ex-a")
    repo = create_sample_repo(tmp_path / "sick-repo", health_ok=False)
    deployed.append("sick")
    out = deployctl(
        "deploy",
        "--project",
        "sick",
        "--repo",
        repo,
        "--service-port",
        str(free_port()),
        "--json",
        redis_url=redis_url,
        keys_dir=keys_dir,
    )
    assert out.returncode == 1, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    result = next(line for line in lines if line["type"] == "result")
    assert result["status"] == "failed"
    assert result["failed_task"] == "Wait for health check"
    assert result["deployed_url"] is None


def test_provision_twice_second_run_changes_nothing(
    executors: Executors, redis_url: str, keys_dir: Path
) -> None:
    executors.start("ex-a")
    runs = []
    for _ in range(2):
        out = deployctl(
            "provision", "--server", "srv-1", "--json", redis_url=redis_url, keys_dir=keys_dir
        )
        assert out.returncode == 0, out.stdout + out.stderr
        runs.append(json.loads(out.stdout.splitlines()[-1]))
    assert all(r["status"] == "success" for r in runs)
    assert sum(s["changed"] for s in runs[0]["stats"].values()) > 0
    assert all(s["changed"] == 0 for s in runs[1]["stats"].values()), runs[1]["stats"]
    marker = executors.apps_root / ".deploystream-provisioned"
    assert "handle=srv-1" in marker.read_text()


def test_failure_summary_carries_the_failing_tasks_message(
    executors: Executors, tmp_path: Path, deployed: list[str], redis_url: str, keys_dir: Path
) -> None:
    """The summary says *why* (git's own words), not 'task X failed on H' again."""
    executors.start("ex-a")
    repo = create_sample_repo(tmp_path / "repo")
    deployed.append("noref")
    out = deployctl(
        "deploy", "--project", "noref", "--repo", repo, "--ref", "no-such-branch",
        "--service-port", str(free_port()),
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    summary = next(ln for ln in out.stderr.splitlines() if " ended failed " in ln)
    _, _, why = summary.partition(" ended failed at task 'Fetch repository' on localhost: ")
    assert why, summary
    assert "failed on" not in why and "Fetch repository" not in why, summary
    assert "no-such-branch" in why, summary  # git's message names the ref it lacks


def test_deploy_to_a_held_port_fails_naming_the_holder(
    executors: Executors, tmp_path: Path, deployed: list[str], redis_url: str, keys_dir: Path
) -> None:
    """Through the CLI and an executor: exit 1, the summary names the port and holder."""
    import socket

    executors.start("ex-a")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        deployed.append("held")
        out = deployctl(
            "deploy", "--project", "held", "--repo", create_sample_repo(tmp_path / "repo"),
            "--service-port", str(port), redis_url=redis_url, keys_dir=keys_dir,
        )  # fmt: skip
        assert out.returncode == 1, out.stdout + out.stderr
        summary = next(ln for ln in out.stderr.splitlines() if " ended failed " in ln)
        assert "at task 'Check service port is free' on localhost: " in summary, summary
        assert f"port {port} is held by another process: pid {os.getpid()} (" in summary
        assert "SUCCESS" not in out.stdout
    finally:
        holder.close()
