"""The executor's heartbeat, which every run's guard watches.

A paused executor (SIGSTOP, a frozen VM, a stuck event loop) stops renewing its
leases; after one lease another executor adopts its jobs and runs them again. Its
own playbooks must be gone by then, or the same side effects run twice at once.
So the executor's event loop touches a file every lease/6, and the guard of each
run (:mod:`executor.guard`) kills the run's process tree after half a lease
without a touch -- well before anyone can adopt (the last renewal was at most a
third of a lease before the pause, adoption waits a whole lease after it).

The guard exits with :data:`executor.guard.ORPHANED_RC`; when the executor
resumes it gives the entry back (its run is gone) and the job runs again as a new,
visible attempt.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import anyio

from executor.guard import ENV_HEARTBEAT, ENV_HEARTBEAT_TIMEOUT


class Heartbeat:
    def __init__(self, lease_ms: int, directory: Path | None = None) -> None:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"heartbeat-{os.getpid()}-", dir=directory)  # 0600
        os.close(fd)
        self.path = Path(name)
        self.period_s = lease_ms / 6000
        self.timeout_s = lease_ms / 2000

    def env(self) -> dict[str, str]:
        """What a run's guard needs to watch it."""
        return {ENV_HEARTBEAT: str(self.path), ENV_HEARTBEAT_TIMEOUT: f"{self.timeout_s:.3f}"}

    def beat(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.path)

    async def run(self) -> None:
        """Touch the file from the event loop, forever: a loop that stops, stops it."""
        while True:
            self.beat()
            await anyio.sleep(self.period_s)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
