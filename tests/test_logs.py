"""Executor logs: JSON lines bound to request_id and executor when not on a terminal,
human-readable on one."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pexpect
import pytest

from contracts import StreamsConfig
from tests.harness import DEPLOYCTL, Executors, cli_env, deployctl

ANSIBLE_DIR = Path(__file__).parent / "ansible"


@pytest.mark.slow
def test_executor_logs_are_json_bound_to_request_and_executor(
    executors: Executors, redis_url: str, keys_dir: Path, config: StreamsConfig
) -> None:
    executors.project_dir = ANSIBLE_DIR
    ex = executors.start("ex-log")
    ids = []
    for playbook, code in (("quick", 0), ("fail_task", 1)):
        out = deployctl(
            "provision", "--server", "s1", "--playbook", playbook, "--json",
            redis_url=redis_url, keys_dir=keys_dir,
        )  # fmt: skip
        assert out.returncode == code, out.stderr
        ids.append(json.loads(out.stdout.splitlines()[0])["job"]["request_id"])
    assert ex.terminate() == 0

    # stdout and stderr of the process go to a file: every line is one JSON object.
    records = [json.loads(line) for line in ex.output().splitlines() if line.strip()]
    assert records, "the executor logged nothing"
    for rec in records:
        assert {"event", "level", "timestamp"} <= rec.keys(), rec
        assert rec["executor"] == "ex-log", rec
    events = [r["event"] for r in records]
    assert events[0] == "executor.started" and events[-1] == "executor.stopped"
    job_lines = [r for r in records if r["event"].startswith("job.")]
    for rid in ids:
        mine = [r for r in job_lines if r.get("request_id") == rid]
        assert {"job.accepted", "job.finished"} <= {r["event"] for r in mine}, job_lines
    finished = {r["request_id"]: r["status"] for r in job_lines if r["event"] == "job.finished"}
    assert finished == {ids[0]: "success", ids[1]: "failed"}
    assert all("request_id" in r and "executor" in r for r in job_lines)


@pytest.mark.slow
def test_executor_logs_are_for_people_on_a_terminal(redis_url: str, keys_dir: Path) -> None:
    env = cli_env(redis_url, keys_dir, TERM="xterm-256color", NO_COLOR="1")
    child = pexpect.spawn(
        DEPLOYCTL,
        ["--log-level", "info", "executor", "--name", "ex-tty", "--project-dir", str(ANSIBLE_DIR)],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    try:
        child.expect("executor.started")
        line = child.before.splitlines()[-1] + child.after + child.readline()
    finally:
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
        child.close()
    assert not line.lstrip().startswith("{"), line
    assert "ex-tty" in line and "info" in line, line
