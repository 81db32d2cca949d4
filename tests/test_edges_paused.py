"""Issue 20, point 2: a paused executor's playbook stops itself before anyone adopts it.

The owner is SIGSTOPped (only the executor process: its playbook's processes keep
running, as they would under a frozen event loop). Its run's guard sees the
heartbeat go silent and kills the run's tree within half a lease; another executor
adopts the job after a whole lease; the two runs never overlap -- observed from the
playbook's own processes, sampled throughout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from contracts import Reclaimed, TaskStarted
from tests.faults_support import fault_env, pids_matching, wait_for

pytestmark = pytest.mark.slow


def _ancestors(pid: int) -> set[int]:
    out: set[int] = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            break
        pid = int(stat[stat.rfind(b")") + 2 :].split()[1])
    return out


class Sampler(threading.Thread):
    """Every 20 ms: which executors have a process of this run's tasks (``tag``) below them."""

    def __init__(self, tag: str, executors: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.tag = tag
        self.executors = executors
        self.samples: list[tuple[float, frozenset[str]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            owners = {
                name
                for pid in pids_matching(self.tag)
                for root, name in self.executors.items()
                if root in _ancestors(pid)
            }
            self.samples.append((time.monotonic(), frozenset(owners)))
            time.sleep(0.02)


def test_a_paused_executors_run_is_gone_before_another_adopts_it(tmp_path: Path) -> None:
    with fault_env(tmp_path, lease_ms=3000, reclaim_ms=200) as env:
        first = env.start_executor("ex-a")
        tag = f"paused-{tmp_path.name}"
        rid = env.submit("ticks", extra_vars={"run_tag": tag, "ticks": 20, "tick_s": 0.5})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Tick")
        second = env.start_executor("ex-b")
        wait_for(lambda: pids_matching(tag), 30, "the first run's task")
        sampler = Sampler(tag, {first.proc.pid: "ex-a", second.proc.pid: "ex-b"})
        sampler.start()
        os.kill(first.proc.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            # The first run dies by itself (its executor is still stopped) ...
            gone_at = wait_for(
                lambda: not pids_matching(tag) and time.monotonic(), 20, "the paused run to stop"
            )
            # ... well before the lease ends; then the job is adopted and runs again.
            assert gone_at - paused_at < 3.0
            reclaimed = env.wait_event(rid, lambda e: isinstance(e, Reclaimed), timeout=60)
            assert isinstance(reclaimed, Reclaimed)
            assert reclaimed.executor == "ex-b" and reclaimed.previous_owner == "ex-a"
            wait_for(lambda: pids_matching(tag), 30, "the adopted run's task")
        finally:
            os.kill(first.proc.pid, signal.SIGCONT)
        result = env.wait_result(rid, timeout=120)
        sampler.stop.set()
        sampler.join(5)
        assert result.status == "success" and result.executor == "ex-b", (result, env.logs())
        assert len(env.results(rid)) == 1
        # Never two runs at once: no sample saw tasks of both executors' runs, and
        # the adopted run's tasks appeared only after the first run's were gone.
        assert not [t for t, owners in sampler.samples if len(owners) > 1]
        seen_a = [t for t, owners in sampler.samples if "ex-a" in owners]
        seen_b = [t for t, owners in sampler.samples if "ex-b" in owners]
        assert seen_a and seen_b and max(seen_a) < min(seen_b)
        assert first.proc.poll() is None  # the resumed executor carries on
