"""Run one playbook with ansible-runner. Blocking: called in a worker thread.

Each run gets a private 0700 directory (inventory, the 0600 secrets file, runner
artifacts) that is removed afterwards, so nothing secret is left on disk. Secrets
reach Ansible only through that file and the environment, never argv.

Cancel and timeout stop the run's whole process *tree*. ansible-runner alone would
kill only the process group of ``ansible-playbook``, but Ansible's worker processes
call ``setsid()``, so their task processes (a ``sleep``, a ``git clone``) would
survive as orphans. Here the cancel callback (polled every 0.2 s) first freezes and
kills every process of the run (:func:`executor.guard.kill_tree`), then lets
ansible-runner finish its own cleanup. The timeout (``job.timeout_s``) is enforced
by the same callback so it gets the same treatment. A process that detached from
the tree on purpose (a service the playbook starts with ``setsid``/double fork,
whose parent has exited) is not part of the run and stays.

``ansible-playbook`` is started through :mod:`executor.guard`, which kills the
run's tree if the executor process itself dies (kill -9, OOM) or stops answering
(its heartbeat, ``guard_env``, goes silent for half a lease: the outcome is then
``orphaned``): a job adopted by another executor is never still running here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_runner.interface import init_runner

from contracts import DeployJob, HostStats, HostSummary, Job, ProvisionJob, Target
from contracts.rules import repo_clone_url
from deploystream.processes import pid_alive
from executor import ssh
from executor.guard import ENV_NICE, ENV_RUN, ORPHANED_RC, kill_tree, proc_table, run_marker
from executor.settings import ExecutorSettings
from executor.translate import failure_line, host_stats, host_summaries, stats_artifacts

_GUARD = Path(__file__).resolve().with_name("guard.py")

# How often ansible-runner checks the cancel flag (its default is 5 s).
_CANCEL_POLL_S = 0.2

# Run dirs are named ``run-<executor pid>-<random>``: a dir whose executor is gone
# (kill -9, OOM) is swept by the next executor that starts with the same work dir.
RUN_PREFIX = "run-"
# The executor's own environment variables the playbook may see (everything else --
# REDIS_URL, DEPLOYSTREAM_*, the SSH key path, ... -- never reaches Ansible).
ENV_ALLOW = frozenset({"HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ"})


@dataclass
class RunOutcome:
    # ansible-runner's: successful | failed | timeout | canceled | error, or ``orphaned``:
    # the guard stopped the run because this executor stopped answering.
    status: str
    rc: int | None
    stats: dict[str, HostStats] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    failed_task: str | None = None
    failed_hosts: list[str] = field(default_factory=list)
    error: str | None = None
    # The first line of the first failed task's message (why it failed).
    failed_message: str | None = None
    # Every host of the run (inventory order, within the job's limit).
    hosts: dict[str, HostSummary] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenedSecrets:
    """Plaintext secrets of one job: exists only in the executor's memory and run dir."""

    values: Mapping[str, str]
    github_token: str | None = None

    def all_values(self) -> list[str]:
        out = list(self.values.values())
        if self.github_token:
            out.append(self.github_token)
        return out


def _host_line(t: Target, settings: ExecutorSettings) -> tuple[str, str]:
    if t.is_local:
        # "local" is an alias of localhost; other local names (127.0.0.1, ::1) stay
        # distinct inventory hosts, so a job may target two local aliases.
        name = "localhost" if t.host == "local" else t.host
        line = f"{name} ansible_connection=local ansible_python_interpreter={settings.python}"
        return name, line
    parts = [t.host, f"ansible_host={t.host}", f"ansible_port={t.port}"]
    if t.user:
        parts.append(f"ansible_user={t.user}")
    if settings.ssh_key_path:
        parts.append(f"ansible_ssh_private_key_file={settings.ssh_key_path}")
    return t.host, " ".join(parts)


def _inventory(job: Job, settings: ExecutorSettings) -> dict[str, tuple[Target, str]]:
    """``target`` first, then the extra ``hosts`` (a name listed twice counts once):
    inventory name -> (target, inventory line)."""
    lines: dict[str, tuple[Target, str]] = {}
    for t in [job.target, *job.hosts]:
        name, line = _host_line(t, settings)
        lines.setdefault(name, (t, line))
    return lines


def _url_of(job: Job) -> Callable[[str], str | None]:
    """Where a deploy's service answers on one host (deploy_service's deployed_url)."""
    if not isinstance(job, DeployJob):
        return lambda _host: None
    return lambda host: f"http://{'localhost' if host == 'local' else host}:{job.service_port}"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _run_roots(marker: bytes) -> list[int]:
    """Our own child processes whose command line names this run's private dir."""
    me = os.getpid()
    return [pid for pid, ppid in proc_table().items() if ppid == me and marker in _cmdline(pid)]


def _extravars(job: Job, settings: ExecutorSettings, secrets_file: Path) -> dict[str, Any]:
    # Job-supplied vars first: the executor's own keys win (rules also forbid them).
    ev: dict[str, Any] = dict(job.extra_vars)
    ev["apps_root"] = str(settings.apps_root)
    # Every playbook can read its job's secrets from this 0600 file (never argv).
    ev["secrets_file"] = str(secrets_file)
    if isinstance(job, DeployJob):
        ev.update(
            project_name=job.project_name,
            project_id=job.project_id,
            repo_url=repo_clone_url(job.repo),
            ref=job.ref,
            service_port=job.service_port,
            health_path=job.health_path,
            modules=list(job.modules),
        )
    elif isinstance(job, ProvisionJob):
        ev.update(
            server_handle=job.server_handle,
            force_reinstall=job.force_reinstall,
            is_recovery=job.is_recovery,
        )
        if not job.target.is_local and settings.ssh_key_path:
            # its *public* half, authorized for the deploy user the host gets
            ev["deploy_public_key"] = ssh.public_key(settings.ssh_key_path)
    if job.serial:
        ev["ds_serial"] = job.serial
    if job.max_fail_percent is not None:
        ev["ds_max_fail_percent"] = job.max_fail_percent
    return ev


def sweep_stale_run_dirs(base: Path | None) -> list[Path]:
    """Remove the run dirs of executors that died without cleaning up (kill -9, OOM):
    their secrets.json and ansible-runner's ``command`` artifact (which holds the
    run's environment, the git token included). A dir is stale when the executor
    whose pid it names is gone, or is this very process (a container restarted with
    the same pid); dirs of other users are left alone."""
    base = base if base is not None else Path(tempfile.gettempdir())
    me, uid, removed = os.getpid(), os.getuid(), []
    for run_dir in base.glob(f"{RUN_PREFIX}*-*"):
        pid = run_dir.name.removeprefix(RUN_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or run_dir.lstat().st_uid != uid or not run_dir.is_dir():
                continue
        except OSError:
            continue
        if int(pid) != me and pid_alive(int(pid)):
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


def runner_env(prepared: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """The playbook's environment: an allow-list, not the executor's environment.

    ansible-runner seeds a run's environment with a copy of ``os.environ`` (the
    executor's: ``REDIS_URL`` with its password, ``DEPLOYSTREAM_KEYS_DIR``, ...). Kept:
    what we set (``ours``), what ansible-runner itself added or changed (its callback
    plugin, artifact dir, ...), and the few harmless names of :data:`ENV_ALLOW`.
    """
    inherited = os.environ
    return {
        k: v
        for k, v in prepared.items()
        if k in ours or k in ENV_ALLOW or k not in inherited or inherited[k] != v
    }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def run_playbook(
    job: Job,
    playbook: Path,
    settings: ExecutorSettings,
    secrets: OpenedSecrets,
    on_event: Callable[[dict[str, Any]], None],
    cancel: threading.Event,
    nice: int = 0,
    guard_env: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one job's playbook, ``nice`` steps below the executor's own priority;
    ``guard_env`` tells the run's guard which heartbeat to watch."""
    base = settings.work_dir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-", dir=base))  # 0700
    try:
        with ssh.control_dir() as control:
            return _run_in(
                run_dir,
                control,
                job,
                playbook,
                settings,
                secrets,
                on_event,
                cancel,
                nice,
                guard_env or {},
            )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_in(
    run_dir: Path,
    control: Path,
    job: Job,
    playbook: Path,
    settings: ExecutorSettings,
    secrets: OpenedSecrets,
    on_event: Callable[[dict[str, Any]], None],
    cancel: threading.Event,
    nice: int,
    guard_env: Mapping[str, str],
) -> RunOutcome:
    inventory = run_dir / "inventory"
    hosts = _inventory(job, settings)
    _write_private(inventory, "\n".join(line for _t, line in hosts.values()) + "\n")
    # The run's hosts (within the job's limit); those whose key is unknown never run.
    scope = [h for h in hosts if not job.limit or h in job.limit]
    refused = ssh.refused_hosts(job, [hosts[h][0] for h in scope], settings.known_hosts)
    runnable = [h for h in scope if h not in refused]
    secrets_file = run_dir / "secrets.json"
    dotenv: dict[str, str] = {}
    if isinstance(job, DeployJob):
        dotenv.update(job.env)
    dotenv.update(secrets.values)
    _write_private(secrets_file, json.dumps(dotenv))
    tmp = run_dir / "tmp"
    tmp.mkdir(mode=0o700)

    env = {
        "PATH": os.pathsep.join([str(Path(settings.python).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_LOCAL_TEMP": str(tmp),
        "ANSIBLE_REMOTE_TEMP": str(tmp) if job.target.is_local else "~/.ansible/tmp",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
        ENV_NICE: str(nice),
        **ssh.ssh_env(job, settings.known_hosts, control),
        **guard_env,
        ENV_RUN: str(run_dir),
    }
    if secrets.github_token:
        env["DEPLOYSTREAM_GIT_TOKEN"] = secrets.github_token
    for bindir in (Path(settings.python).parent, Path(sys.executable).parent):
        if (bindir / "ansible-playbook").is_file():
            env["DEPLOYSTREAM_ANSIBLE_PLAYBOOK"] = str(bindir / "ansible-playbook")
            break

    outcome = RunOutcome(status="error", rc=None)
    failed: dict[str, tuple[str, str]] = {}  # host -> (task, first line of its message)
    if not runnable:  # every host refused: nothing to run anywhere
        outcome.status = "failed"
        outcome.failed_hosts = sorted(refused)
        outcome.error = outcome.failed_message = next(iter(refused.values()))
        outcome.hosts = host_summaries(scope, {}, {}, refused, _url_of(job))
        return outcome
    # The run's ansible-playbook is the only child of ours whose argv names run_dir.
    marker = str(inventory).encode()
    deadline = time.monotonic() + job.timeout_s
    stopped: list[str] = []

    def should_stop() -> bool:
        if stopped:
            return True
        if cancel.is_set():
            reason = "canceled"
        elif time.monotonic() > deadline:
            reason = "timeout"
        else:
            return False
        stopped.append(reason)
        with contextlib.suppress(Exception):  # ansible-runner kills the group anyway
            for root in _run_roots(marker):
                kill_tree(root, marker=run_marker(str(run_dir)))
        return True

    def handler(raw: dict[str, Any]) -> bool:
        name = raw.get("event")
        data = raw.get("event_data") or {}
        if name in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            host, why = str(data.get("host", "")), failure_line(raw)
            if name == "runner_on_unreachable":
                msg = str((data.get("res") or {}).get("msg", ""))
                why = ssh.key_mismatch(host, msg) or why
                if why.startswith("host key for"):
                    refused.setdefault(host, why)
            failed.setdefault(host, (str(data.get("task", "")), why))
        elif name == "playbook_on_stats":
            outcome.stats = host_stats(raw)
            outcome.artifacts = stats_artifacts(raw)
        on_event(raw)
        return False  # never write event files: they can hold rendered values

    runner = init_runner(
        private_data_dir=str(run_dir),
        # ``python -S -E guard.py PLAYBOOK -i ... -e ...`` runs ansible-playbook guarded.
        binary=sys.executable,
        cmdline=" ".join(shlex.quote(a) for a in ("-S", "-E", str(_GUARD), str(playbook))),
        inventory=str(inventory),
        extravars=_extravars(job, settings, secrets_file),
        envvars=env,
        limit=",".join(runnable) if (job.limit or refused) else None,
        event_handler=handler,
        cancel_callback=should_stop,
        quiet=True,
        suppress_env_files=True,
        settings={"pexpect_timeout": _CANCEL_POLL_S, "suppress_ansible_output": True},
        ident="run",
    )
    runner.config.env = runner_env(runner.config.env, env)
    runner.run()
    outcome.status = str(runner.status)
    if stopped and outcome.status in ("canceled", "failed", "error"):
        outcome.status = stopped[0]
    outcome.rc = runner.rc
    if runner.rc == ORPHANED_RC and not stopped:
        outcome.status = "orphaned"
        outcome.error = "the run stopped itself: this executor stopped answering (paused?)"
    # The play recap is the word on each host, also when a task's event lost its result.
    for host, st in outcome.stats.items():
        if st.failed or st.unreachable:
            failed.setdefault(host, ("", ""))
    outcome.failed_hosts = sorted(set(failed) | set(refused))
    if failed:
        task, message = next((v for v in failed.values() if v[0]), ("", ""))
        outcome.failed_task = task or None
        outcome.failed_message = message or None
    elif refused:
        outcome.failed_message = next(iter(refused.values()))
    if refused and outcome.status == "successful":
        outcome.status = "failed"  # the others ran; the refused hosts did not
    if outcome.status == "failed" and not failed and not refused:
        outcome.error = f"ansible-playbook exited with rc={runner.rc}"
    whys = {h: why for h, (_task, why) in failed.items()}
    outcome.hosts = host_summaries(scope, outcome.stats, whys, refused, _url_of(job))
    return outcome
