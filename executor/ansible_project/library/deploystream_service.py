"""Ansible module of deploy_service: who holds a port, and is our service the one answering.

``state: port_free``  fail (naming the port and, when this user can see it, the
                      holder's pid and command line) if any process listens on ``port``.
``state: healthy``    wait until the service whose pid (== process group == session)
                      is in ``pid_file`` answers ``url`` with 200 *and* every socket
                      listening on ``port`` belongs to it. Stops at once when the
                      service has exited or another process answers on the port; the
                      failure carries the last lines of the service's own log. Without
                      ``pid_file`` (compose) only the HTTP check is made.

Reads /proc (Linux): the listening sockets from /proc/net/tcp{,6}, their owners from
/proc/<pid>/fd; needs nothing else on the host. A socket whose owner this user cannot
see counts as someone else's.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule

_LISTEN = "0A"
_LOG_LINES = 8
_LOG_LINE_MAX = 160
_LOG_CHARS = 320


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == _LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _owners(inodes: set[str]) -> dict[str, list[int]]:
    """inode -> pids holding it (only the processes this user may look into)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[str, list[int]] = {i: [] for i in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target in wanted:
                    found[wanted[target]].append(int(entry.name))
    return found


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2]), int(fields[3])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)
    except OSError:
        cmd = ""
    return f"pid {pid} ({cmd[:120]})" if cmd else f"pid {pid}"


def _holders(port: int, service: int | None) -> tuple[list[str], bool]:
    """(other processes listening on the port, in words; whether ours listens too)."""
    others: list[str] = []
    ours = False
    for pids in _owners(_listening_inodes(port)).values():
        if not pids:
            others.append("a process this user cannot see")
            continue
        for pid in pids:
            st = _stat(pid)
            if service is not None and st is not None and service in (st[1], st[2]):
                ours = True
            else:
                others.append(_describe(pid))
    return sorted(set(others)), ours


def _log_tail(path: str) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    # The last lines first: a published message is cut at 500 characters (from its end).
    tail: list[str] = []
    for line in reversed([ln[:_LOG_LINE_MAX] for ln in lines if ln.strip()][-_LOG_LINES:]):
        if tail and sum(len(t) + 1 for t in tail) + len(line) > _LOG_CHARS:
            break
        tail.insert(0, line)
    return f"last lines of {path}:\n" + "\n".join(tail) if tail else f"({path} is empty)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (http only)
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _read_pid(pid_file: str) -> int | None:
    try:
        text = Path(pid_file).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _healthy(module: AnsibleModule, p: dict[str, Any]) -> None:
    port: int = p["port"]
    deadline = time.monotonic() + float(p["timeout"])
    service = _read_pid(p["pid_file"]) if p["pid_file"] else None
    if p["pid_file"] and service is None:
        module.fail_json(msg=f"the service did not record its pid in {p['pid_file']}")
    while True:
        if service is not None and not _alive(service):
            module.fail_json(
                msg=f"the service (pid {service}) exited before answering on port {port}; "
                + _log_tail(p["log_file"]),
                port=port,
            )
        others, ours = _holders(port, service) if service is not None else ([], True)
        if others:
            module.fail_json(
                msg=f"port {port} is held by another process: {', '.join(others)}"
                + (f", not by the service (pid {service})" if service is not None else ""),
                port=port,
                holders=others,
            )
        if ours and _answers(p["url"]):
            module.exit_json(changed=False, pid=service, port=port, url=p["url"])
        if time.monotonic() >= deadline:
            who = f"the service (pid {service})" if service is not None else "the service"
            log = f"; {_log_tail(p['log_file'])}" if p["log_file"] else ""
            module.fail_json(
                msg=f"{who} did not answer 200 on {p['url']} within {p['timeout']} s{log}",
                port=port,
            )
        time.sleep(float(p["delay"]))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True, "choices": ["port_free", "healthy"]},
            "port": {"type": "int", "required": True},
            "url": {"type": "str", "default": ""},
            "pid_file": {"type": "str", "default": ""},
            "log_file": {"type": "str", "default": ""},
            "timeout": {"type": "float", "default": 15.0},
            "delay": {"type": "float", "default": 0.5},
        },
        supports_check_mode=False,
    )
    p = module.params
    if p["state"] == "port_free":
        # A moment for the sockets of a process that is still exiting (the previous
        # version of this project, just stopped) to close.
        deadline = time.monotonic() + min(float(p["timeout"]), 2.0)
        while (others := _holders(p["port"], None)[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if others:
            module.fail_json(
                msg=f"port {p['port']} is held by another process: {', '.join(others)}; "
                "it was left alone: stop it or deploy to another --service-port",
                port=p["port"],
                holders=others,
            )
        module.exit_json(changed=False, port=p["port"])
    _healthy(module, p)


if __name__ == "__main__":
    main()
