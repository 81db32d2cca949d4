"""What a playbook run and a deployed service inherit from the executor: nothing.

The playbook's environment is an allow-list (not the executor's ``os.environ``),
and stale run directories of a dead executor are swept when an executor starts.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from deploystream.keys import OrchestratorKeys, init_keys
from executor.runner import OpenedSecrets, run_playbook
from executor.settings import ExecutorSettings
from orchestrator.job_builder import build_provision_job

ANSIBLE_DIR = Path(__file__).parent / "ansible"


def _stdout_of(events: list[dict[str, Any]], task: str) -> str:
    for raw in events:
        data = raw.get("event_data") or {}
        if raw.get("event") == "runner_on_ok" and data.get("task") == task:
            return str(data["res"]["stdout"])
    raise AssertionError(f"no ok result for {task!r}")


def test_playbook_environment_is_an_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor's REDIS_URL, DEPLOYSTREAM_* and anything else it was started with
    never reach ansible-playbook or its tasks."""
    inherited = {
        "REDIS_URL": "redis://executor:executor-password-leak@127.0.0.1:1/0",
        "DEPLOYSTREAM_KEYS_DIR": "/keys-dir-leak",
        "DEPLOYSTREAM_SSH_KEY": "/ssh-key-leak",
        "SOME_OPERATOR_VAR": "operator-var-leak",
    }
    for k, v in inherited.items():
        monkeypatch.setenv(k, v)
    keys = tmp_path / "keys"
    init_keys(keys)
    job = build_provision_job(OrchestratorKeys.load(keys), server_handle="env", playbook="env_dump")
    settings = ExecutorSettings(name="env", project_dir=ANSIBLE_DIR, work_dir=tmp_path / "work")
    events: list[dict[str, Any]] = []
    outcome = run_playbook(
        job,
        ANSIBLE_DIR / "env_dump.yml",
        settings,
        OpenedSecrets(values={}),
        events.append,
        threading.Event(),
    )
    assert outcome.status == "successful", outcome
    env = _stdout_of(events, "Print environment")
    names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
    for name, value in inherited.items():
        assert name not in names and value not in env, name
    assert "PATH" in names and "ANSIBLE_LOCAL_TEMP" in names  # what the run needs is there
    assert os.environ["REDIS_URL"] == inherited["REDIS_URL"]  # the executor's own is untouched
