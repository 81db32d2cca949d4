"""Process trees of playbook runs, and the guard that ties a run to its executor.

Run as a script (``python -S -E .../executor/guard.py PLAYBOOK ARGS...``) it is
the process ansible-runner starts for a run: it asks the kernel for a signal when
its parent (the executor) dies (``PR_SET_PDEATHSIG``), starts ``ansible-playbook``
as its child and waits for it, exiting with its status. The run starts
``DEPLOYSTREAM_PLAYBOOK_NICE`` steps nicer than the executor. If the executor dies --
kill -9, OOM killer -- the guard kills the run's whole process tree and exits, so
an orphaned playbook never keeps running next to the executor that adopts the job.

A *paused* executor (SIGSTOP, a frozen VM) does not die, so the guard also watches
its heartbeat (:mod:`executor.heartbeat`): a file the executor's event loop touches
every lease/6, named by ``DEPLOYSTREAM_HEARTBEAT``. Without a touch for
``DEPLOYSTREAM_HEARTBEAT_TIMEOUT`` seconds (half a lease) the guard kills the run's
tree and exits :data:`ORPHANED_RC`, before another executor can adopt the job.
The guard measures the silence on its own monotonic clock (a change of the file's
mtime resets it), so wall-clock jumps do not matter.

Why a tree and not a process group: Ansible's worker processes call ``setsid()``,
so the tasks they run (a ``sleep``, a ``git clone``) are in other sessions and
groups than ``ansible-playbook``; killing its group (what ansible-runner does on
cancel and timeout) leaves them running. :func:`kill_tree` freezes every
descendant (SIGSTOP, re-reading the tree until it stops growing, so nothing forks
its way out) and then kills them all. A process that left the tree on purpose --
a service a deploy starts with ``setsid`` and a double fork, reparented to init --
is not part of the run and is left alone.

Which processes belong to a run: those whose environment carries
``DEPLOYSTREAM_RUN=<run dir>`` (every process the playbook starts inherits it; a
service is started from an empty environment). The guard is a child subreaper, so a
run's orphans come to it rather than to init, and it kills the marked ones left when
the playbook exits: no process outlives its run.

Stdlib only and no package imports: it starts with ``-S`` in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# How much nicer than the executor the run is (streams.toml: executor.playbook-nice).
ENV_NICE = "DEPLOYSTREAM_PLAYBOOK_NICE"
# The executor's heartbeat file, and the silence (seconds) after which the run stops.
ENV_HEARTBEAT = "DEPLOYSTREAM_HEARTBEAT"
ENV_HEARTBEAT_TIMEOUT = "DEPLOYSTREAM_HEARTBEAT_TIMEOUT"
# The guard's exit status when it stopped the run because the executor went silent.
ORPHANED_RC = 75
# Every process of a run carries DEPLOYSTREAM_RUN=<its run dir> in its environment; a
# deployed service, started from an empty environment (env -i), does not.
ENV_RUN = "DEPLOYSTREAM_RUN"


def run_marker(run_dir: str) -> bytes:
    return f"{ENV_RUN}={run_dir}".encode()


def carries(pid: int, marker: bytes) -> bool:
    """Whether ``pid``'s environment holds the entry ``marker`` (NAME=value)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def proc_table() -> dict[int, int]:
    """pid -> ppid of every process we can see (Linux /proc)."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: split after the last ')'.
        rest = stat[stat.rfind(b")") + 2 :].split()
        table[int(entry)] = int(rest[1])
    return table


def descendants(root: int, table: dict[int, int] | None = None) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), parents before children."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_tree(root: int, *, include_root: bool = True, marker: bytes | None = None) -> list[int]:
    """SIGKILL ``root`` (optionally) and all its descendants; returns the pids.

    Everything is frozen (SIGSTOP) first and the tree re-read until it stops
    growing, so nothing can fork its way out between the scan and the kill. With
    ``marker``, only processes whose environment carries it (see :data:`ENV_RUN`):
    a service the run started from an empty environment is left running.
    """
    frozen: list[int] = []
    for _ in range(20):
        tree = descendants(root)
        if include_root:
            tree.insert(0, root)
        fresh = [p for p in tree if p not in frozen and (marker is None or carries(p, marker))]
        if not fresh:
            break
        for pid in fresh:
            _signal(pid, signal.SIGSTOP)
        frozen.extend(fresh)
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    return frozen


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _set_parent_death_signal(sig: int) -> bool:
    return _prctl(_PR_SET_PDEATHSIG, sig)


def _run_nicer(step: str) -> None:
    """Below the executor: a saturated CPU then delays Ansible, not the executor's
    lease renewals and live events. Every process of the run inherits it.

    Where the kernel groups processes by session for scheduling (autogroup), a
    process's nice only ranks it within its session's group, and ansible-runner
    starts the run in a session of its own: that group is niced too. (Ansible's
    task workers start sessions of their own again; see docs/benchmarks.md.)
    """
    try:
        n = int(step)
    except ValueError:
        return
    if n <= 0:
        return
    with contextlib.suppress(OSError):
        os.nice(n)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as fh:
        fh.write(str(n))


def main(argv: list[str]) -> int:
    """``guard.py PLAYBOOK ARGS...``: run ``ansible-playbook PLAYBOOK ARGS...`` guarded."""
    binary = os.environ.get("DEPLOYSTREAM_ANSIBLE_PLAYBOOK") or shutil.which("ansible-playbook")
    if not binary:
        print("deploystream guard: ansible-playbook not found on PATH", file=sys.stderr)
        return 127
    _run_nicer(os.environ.get(ENV_NICE, "0"))
    parent = os.getppid()
    guarded = _set_parent_death_signal(signal.SIGTERM)
    if guarded and os.getppid() != parent:
        return 137  # the executor died before we were set up: do not start the run
    if not guarded:  # not Linux: run unguarded rather than not at all
        os.execv(binary, [binary, *argv])  # noqa: S606 - argv as given, no shell

    run = os.environ.get(ENV_RUN)
    marker = run_marker(run) if run else None

    def executor_died(signum: int, frame: object) -> None:
        kill_tree(os.getpid(), include_root=False, marker=marker)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, executor_died)
    heartbeat = os.environ.get(ENV_HEARTBEAT, "")
    try:
        silence_s = float(os.environ.get(ENV_HEARTBEAT_TIMEOUT, "0") or 0)
    except ValueError:
        silence_s = 0.0
    watch = bool(heartbeat) and silence_s > 0
    if watch:  # wake on the child's exit at once (sigtimedwait), not on a poll tick
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    # Processes of the run orphaned on the way (a task's background child) come to us,
    # not to init: they are found, and killed, when the playbook is done.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            if watch:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
            os.execv(binary, [binary, *argv])  # noqa: S606 - argv as given, no shell
        finally:
            os._exit(127)
    if watch:
        status = _wait_watching(child, heartbeat, silence_s, marker)
        if status is None:
            return ORPHANED_RC
    else:
        while True:  # reap orphans handed to us until the playbook itself exits
            pid, status = os.waitpid(-1, 0)
            if pid == child:
                break
    if marker is not None:  # no process of the run outlives it (services stay)
        kill_tree(os.getpid(), include_root=False, marker=marker)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _wait_watching(
    child: int, heartbeat: str, silence_s: float, marker: bytes | None
) -> int | None:
    """Wait for ``child`` (reaping the orphans handed to us on the way); None if the
    heartbeat went silent and the run was killed."""
    tick = min(0.1, silence_s / 5)
    seen = _mtime(heartbeat)
    changed = time.monotonic()
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        while pid and pid != child:
            pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return status
        now_seen = _mtime(heartbeat)
        if now_seen != seen:
            seen, changed = now_seen, time.monotonic()
        elif time.monotonic() - changed > silence_s:
            print(
                f"deploystream guard: no heartbeat from the executor for {silence_s:g} s "
                "(paused or stuck): stopping the run before another executor adopts it",
                file=sys.stderr,
                flush=True,
            )
            kill_tree(os.getpid(), include_root=False, marker=marker)
            os.waitpid(child, 0)
            return None
        signal.sigtimedwait([signal.SIGCHLD], tick)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
