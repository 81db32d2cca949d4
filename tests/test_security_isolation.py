"""What a playbook run and a deployed service inherit from the executor: nothing.

The playbook's environment is an allow-list (not the executor's ``os.environ``),
and stale run directories of a dead executor are swept when an executor starts.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import redis

from contracts import StreamsConfig, encode
from deploystream.keys import ExecutorKeys, OrchestratorKeys, init_keys
from executor import intake
from executor.runner import OpenedSecrets, run_playbook
from executor.settings import ExecutorSettings
from orchestrator.job_builder import build_deploy_job, build_provision_job
from tests.harness import Executors, deployctl

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


def test_non_root_executor_refuses_local_deploys_unless_told(tmp_path: Path) -> None:
    """An executor that cannot switch users refuses to deploy a service to localhost
    (it would run as the executor's user), says why and names the flag; with the
    flag, or for a remote host, or when it can switch users, the job is accepted."""
    keys = tmp_path / "keys"
    init_keys(keys)
    okeys = OrchestratorKeys.load(keys)
    ekeys = ExecutorKeys.load(keys)
    project = tmp_path / "project"
    project.mkdir()
    (project / "deploy_service.yml").write_text("- hosts: all\n  tasks: []\n")

    def verdict(settings: ExecutorSettings, host: str) -> intake.Accepted | intake.Rejected:
        job = build_deploy_job(okeys, project_name="p", repo="https://github.com/o/r", host=host)
        payload = encode(msgspec.structs.replace(job, expires_at=time.time() + 3600))
        fields = {
            b"job": payload,
            b"sig": okeys.sign("ansible.deploy", payload).encode(),
            b"kid": okeys.kid.encode(),
        }
        return intake.examine("ansible.deploy", fields, ekeys, settings)

    plain = ExecutorSettings(project_dir=project, can_switch_users=False)
    refused = verdict(plain, "localhost")
    assert isinstance(refused, intake.Rejected)
    assert refused.reason.startswith("refused: this executor is not root")
    assert "--unisolated-local-services" in refused.reason
    assert isinstance(verdict(plain, "127.0.0.1"), intake.Rejected)
    assert isinstance(verdict(plain, "web1.example.com"), intake.Accepted)
    told = ExecutorSettings(
        project_dir=project, can_switch_users=False, unisolated_local_services=True
    )
    assert isinstance(verdict(told, "localhost"), intake.Accepted)
    root = ExecutorSettings(project_dir=project, can_switch_users=True)
    assert isinstance(verdict(root, "localhost"), intake.Accepted)


def test_executor_help_says_what_the_flag_gives_up(tmp_path: Path) -> None:
    out = deployctl("executor", "--help", redis_url="redis://127.0.0.1:1/0", keys_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--unisolated-local-services" in text
    assert "key files" in text and "other services' files" in text


def test_inline_secrets_on_the_command_line_are_warned_about(
    redis_url: str, keys_dir: Path
) -> None:
    """``--secret K=V`` and ``--github-token T`` put values in argv (``ps``): a warning
    names the environment form; the environment forms give none."""
    base = ["deploy", "--detach", "--project", "p", "--repo", "https://github.com/o/r"]
    inline = deployctl(
        *base,
        "--secret",
        "DB_PASSWORD=inline-value",
        "--github-token",
        "ghp_inline",
        redis_url=redis_url,
        keys_dir=keys_dir,
    )
    assert inline.returncode == 2, inline.stderr  # no --service-port: nothing submitted
    assert "warning: --secret DB_PASSWORD=... puts a secret in this command's argv" in inline.stderr
    assert "prefer --secret DB_PASSWORD with DB_PASSWORD set in the environment" in inline.stderr
    assert "warning: --github-token TOKEN puts a secret" in inline.stderr
    assert "GITHUB_TOKEN in the environment" in inline.stderr
    assert "inline-value" not in inline.stderr and "ghp_inline" not in inline.stderr
    quiet = deployctl(
        *base,
        "--secret",
        "DB_PASSWORD",
        redis_url=redis_url,
        keys_dir=keys_dir,
        DB_PASSWORD="from-env",
        GITHUB_TOKEN="ghp_env",
    )
    assert quiet.returncode == 2, quiet.stderr
    assert "warning" not in quiet.stderr, quiet.stderr


def _processes_naming(needle: bytes) -> list[int]:
    """Pids whose command line or environment mentions ``needle``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            try:
                if needle in Path(f"/proc/{pid}/{part}").read_bytes():
                    out.append(int(pid))
                    break
            except OSError:
                continue
    return out


@pytest.mark.slow
def test_kill_9_leaves_nothing_a_restarted_executor_does_not_sweep(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    """kill -9 of an executor mid-run: its run dir (secrets.json, the runner's
    ``command`` artifact with the run's environment and token) stays on disk until
    the next executor on that work dir starts and sweeps it; no process of the run
    outlives it (the guard kills the tree when the executor dies)."""
    executors.project_dir = ANSIBLE_DIR
    ex = executors.start("ex-doomed", "--concurrency", "1")
    okeys = OrchestratorKeys.load(keys_dir)
    job = build_deploy_job(
        okeys,
        project_name="p",
        repo="https://github.com/o/r.git",
        playbook="sleep",
        extra_vars={"sleep_s": 300},
        secrets={"STALE_SECRET": "stale-" + os.urandom(8).hex()},
        github_token="ghp_" + os.urandom(18).hex(),
    )
    payload = encode(msgspec.structs.replace(job, expires_at=time.time() + 3600))
    cast(Any, rclient).xadd(
        "ansible.deploy",
        {
            b"job": payload,
            b"sig": okeys.sign("ansible.deploy", payload).encode(),
            b"kid": okeys.kid.encode(),
        },
    )
    work = executors.base / "work"
    deadline = time.monotonic() + 60
    while not list(work.glob("run-*/artifacts/run/command")):
        assert time.monotonic() < deadline, ex.output()[-3000:]
        time.sleep(0.05)
    (run_dir,) = [d for d in work.iterdir() if d.name.startswith("run-")]
    assert run_dir.name.startswith(f"run-{ex.proc.pid}-")
    assert (run_dir / "secrets.json").exists()

    ex.kill9()
    # What kill -9 leaves: the run dir, secrets and all.
    assert (run_dir / "secrets.json").exists()
    # No process of the run outlives it.
    deadline = time.monotonic() + 30
    while left := _processes_naming(str(run_dir).encode()):
        assert time.monotonic() < deadline, left
        time.sleep(0.1)

    executors.start("ex-next")
    assert not run_dir.exists()
    assert "executor.swept_stale_runs" in executors.procs[-1].output()


def _sleepers(seconds: int) -> list[int]:
    """Pids of ``sleep <seconds>`` processes."""
    want = f"sleep\0{seconds}\0".encode()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == want:
                out.append(int(pid))
        except OSError:
            continue
    return out


def test_no_process_of_a_run_outlives_it_but_a_service_does(tmp_path: Path) -> None:
    """A task that leaves a background child behind: the child (it carries the run's
    environment, a stray worker or a leaked ``sleep``) is killed when the playbook
    ends, as it would never be otherwise (orphans go to init); a process started from
    an empty environment, as deploy_service starts a service, keeps running."""
    keys = tmp_path / "keys"
    init_keys(keys)
    orphan_s, service_s = 3000 + os.getpid() % 500, 3600 - os.getpid() % 50
    job = build_provision_job(
        OrchestratorKeys.load(keys),
        server_handle="orphans",
        playbook="orphans",
        extra_vars={"orphan_s": orphan_s, "service_s": service_s},
    )
    settings = ExecutorSettings(name="orph", project_dir=ANSIBLE_DIR, work_dir=tmp_path / "work")
    try:
        outcome = run_playbook(
            job,
            ANSIBLE_DIR / "orphans.yml",
            settings,
            OpenedSecrets(values={}),
            lambda raw: None,
            threading.Event(),
        )
        assert outcome.status == "successful", outcome
        deadline = time.monotonic() + 10
        while _sleepers(orphan_s):
            assert time.monotonic() < deadline, "the run's orphan outlived it"
            time.sleep(0.05)
        assert len(_sleepers(service_s)) == 1, "the service-like process was killed"
    finally:
        for pid in _sleepers(orphan_s) + _sleepers(service_s):
            os.kill(pid, 9)


def test_a_root_executor_deploys_where_service_users_can_reach() -> None:
    """Root's home is 0700: a service running as a user of its own could not reach an
    app dir under it, so a root executor's default apps root is /srv/deploystream-apps."""
    from executor.settings import default_apps_root

    assert default_apps_root(0) == Path("/srv/deploystream-apps")
    assert default_apps_root(1000) == Path.home() / "deploystream-apps"
