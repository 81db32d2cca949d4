"""Test helper run by crash.yml: kill -9 the `deployctl executor` above this process
and everything below it (ansible-playbook, its workers, this script)."""

import contextlib
import os
import signal


def stat(pid):
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    return raw[raw.rfind(b")") + 2 :].split()


def argv(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().split(b"\0")


def find_executor():
    pid = os.getpid()
    while pid > 1:
        pid = int(stat(pid)[1])
        args = argv(pid)
        if any(a.endswith(b"deployctl") for a in args) and b"executor" in args:
            return pid
    raise SystemExit("no deployctl executor above me")


def tree(root):
    table = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError):
                table[int(p)] = int(stat(p)[1])
    out, todo = [root], [root]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in table.items() if pp == parent]
        out += kids
        todo += kids
    return out


executor = find_executor()
pids = tree(executor)
for pid in pids:
    if pid != os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
for pid in pids:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
