"""Test harness: real executor processes, a CLI runner, stream readers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from contracts import Event, StreamsConfig, decode_event
from deploystream.sample_service import stop_service

DEPLOYCTL = str(Path(sys.executable).parent / "deployctl")


# A deployed service's .env: root:<its own group> 0640 when a root executor runs the
# service as a user of its own; else 0600 (the service runs as the deploying user).
ENV_FILE_MODE = 0o640 if os.geteuid() == 0 else 0o600


# A developer running the suite as a normal user: executors cannot switch users, so
# they deploy to localhost only when told to (CI runs as root and switches).
UNISOLATED_UNLESS_ROOT = [] if os.geteuid() == 0 else ["--unisolated-local-services"]


def services_root() -> Path:
    """An apps root a service user can reach (pytest's tmp dirs are 0700, and a
    service deployed by a root executor runs as a user of its own): a fresh dir in
    the system temp dir, searchable but not listable by others. Remove it with
    :func:`remove_services_root`."""
    root = Path(tempfile.mkdtemp(prefix="ds-apps-"))
    root.chmod(0o711)
    return root


def remove_services_root(root: Path) -> None:
    """Stop every service deployed under ``root``, then remove it."""
    if root.is_dir():
        for app in root.iterdir():
            if app.is_dir():
                stop_service(app)
    shutil.rmtree(root, ignore_errors=True)


def cli_env(redis_url: str, keys_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DEPLOYSTREAM_CONFIG", None)  # not the caller's own; one passed in is kept
    env.update(REDIS_URL=redis_url, DEPLOYSTREAM_KEYS_DIR=str(keys_dir), **extra)
    return env


def deployctl(
    *args: str, redis_url: str, keys_dir: Path, timeout: float = 180, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEPLOYCTL, *args],
        env=cli_env(redis_url, keys_dir, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class ExecutorProc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill9(self) -> None:
        """kill -9 the executor and its whole process group (its playbook runs)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Executors:
    redis_url: str
    keys_dir: Path
    base: Path
    project_dir: Path | None = None
    # A streams.toml passed as --config (e.g. the Redis Cluster layout).
    config_path: Path | None = None
    procs: list[ExecutorProc] = field(default_factory=list)
    _apps_root: Path | None = None

    @property
    def apps_root(self) -> Path:
        if self._apps_root is None:
            self._apps_root = services_root()
        return self._apps_root

    def start(self, name: str, *extra_args: str, **env: str) -> ExecutorProc:
        log = self.base / f"{name}.log"
        config = ["--config", str(self.config_path)] if self.config_path else []
        args = [
            DEPLOYCTL,
            *config,
            "--log-level",
            "info",
            "executor",
            "--name",
            name,
            "--apps-root",
            str(self.apps_root),
            "--work-dir",
            str(self.base / "work"),
            *UNISOLATED_UNLESS_ROOT,
            # Tests deploy file:// sample repos; an executor refuses them by default.
            "--allow-file-repos",
            *extra_args,
        ]
        if self.project_dir is not None:
            args += ["--project-dir", str(self.project_dir)]
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                args,
                env=cli_env(self.redis_url, self.keys_dir, **env),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ep = ExecutorProc(name, proc, log)
        self.procs.append(ep)
        self._wait_ready(ep)
        return ep

    def _wait_ready(self, ep: ExecutorProc, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "executor.started" in ep.output():
                return
            if ep.proc.poll() is not None:
                raise RuntimeError(f"executor {ep.name} exited:\n{ep.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"executor {ep.name} did not start:\n{ep.output()}")

    def work_left(self) -> list[Path]:
        """What the executors left in their work dir besides their heartbeats (an
        empty file each live executor touches and removes when it stops): after their
        runs, nothing (every run dir is removed)."""
        work = self.base / "work"
        if not work.exists():
            return []
        beats = tuple(f"heartbeat-{ep.proc.pid}-" for ep in self.procs if ep.proc.poll() is None)
        return [
            p
            for p in work.iterdir()
            if not (p.name.startswith(beats) and p.is_file() and p.stat().st_size == 0)
        ]

    def stop_all(self) -> None:
        for ep in self.procs:
            if ep.proc.poll() is None:
                ep.kill9()
        if self._apps_root is not None:
            remove_services_root(self._apps_root)


def read_events(client: redis.Redis, config: StreamsConfig, request_id: str) -> list[Event]:
    entries = client.xrange(config.events_key(request_id))
    return [decode_event(fields[b"data"]) for _, fields in entries]


def wait_for_result(
    client: redis.Redis, config: StreamsConfig, request_id: str, timeout: float = 120
) -> list[Event]:
    key = config.events_key(request_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = client.xrevrange(key, count=1)
        if last and last[0][1].get(b"type") == b"result":
            return read_events(client, config, request_id)
        time.sleep(0.1)
    raise TimeoutError(f"no result for {request_id} within {timeout} s")
