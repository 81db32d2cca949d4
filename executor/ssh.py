"""How the executor talks SSH: strict host keys, reused connections, its own key.

Every remote host is checked against the executor's known-hosts file
(:mod:`deploystream.known_hosts`) with ``StrictHostKeyChecking=yes``: a host whose key
is not recorded is refused before the run (nothing runs there), and a host whose key
changed fails at the key exchange, before any authentication or command; neither
ever falls back to accepting. Only a provision job that asks for it
(``accept_new_host_key``) trusts a host on first contact (``accept-new``: a changed
key still fails).

Connections are reused within a run: a ControlMaster per host (ControlPersist) in a
short private directory (socket paths are limited to ~100 bytes), closed when the run
ends, plus pipelining (one SSH session per task, no remote temp copies of modules).
The executor's private key is named by path in the run's 0600 inventory, read by the
local ``ssh`` only: never in a job, an event, or on a host.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from contracts import Job, ProvisionJob, Target
from deploystream.known_hosts import known_name, lookup

# ssh's own words for a key that does not match what known_hosts holds.
_KEY_MISMATCH = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")
CONNECT_TIMEOUT_S = 10


def accepts_new(job: Job) -> bool:
    return isinstance(job, ProvisionJob) and job.accept_new_host_key


def unknown_host_message(t: Target, known_hosts: Path) -> str:
    return (
        f"host key for {t.host} unknown: {known_name(t.host, t.port)} is not in "
        f"{known_hosts} (record it with `deployctl hosts add {t.host}`); nothing was run there"
    )


def refused_hosts(job: Job, targets: list[Target], known_hosts: Path) -> dict[str, str]:
    """Remote hosts of the run whose key is not recorded: inventory name -> why."""
    remote = [t for t in targets if not t.is_local]
    if accepts_new(job) or not remote:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(remote))) as pool:  # one ssh-keygen each
        known = list(pool.map(lambda t: bool(lookup(known_hosts, t.host, t.port)), remote))
    return {
        t.host: unknown_host_message(t, known_hosts)
        for t, found in zip(remote, known, strict=True)
        if not found
    }


def key_mismatch(host: str, msg: str) -> str | None:
    """The clear message for an unreachable result that is a host key mismatch."""
    if any(marker in msg for marker in _KEY_MISMATCH):
        return (
            f"host key for {host} changed: it does not match the known-hosts file; "
            "nothing was run there (if the server was reinstalled, remove its old key)"
        )
    return None


def public_key(private_key: Path) -> str:
    """The public half of the executor's key (``ssh-keygen -y``): what a provisioned
    host's deploy user authorizes. The private half stays where it is."""
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private_key)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if derived.returncode == 0:
        return derived.stdout.strip()
    return Path(f"{private_key}.pub").read_text().strip()  # a key with a passphrase


def ssh_env(job: Job, known_hosts: Path, control_dir: Path) -> dict[str, str]:
    """Ansible's SSH settings for one run (environment of ansible-playbook)."""
    strict = "accept-new" if accepts_new(job) else "yes"
    args = [
        "-o ControlMaster=auto",
        "-o ControlPersist=60s",
        f"-o StrictHostKeyChecking={strict}",
        f"-o UserKnownHostsFile={known_hosts}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o UpdateHostKeys=no",
        "-o BatchMode=yes",
        "-o IdentitiesOnly=yes",
        "-o ServerAliveInterval=5",
    ]
    return {
        "ANSIBLE_SSH_ARGS": " ".join(args),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "ANSIBLE_SSH_PIPELINING": "true",
        "ANSIBLE_HOST_KEY_CHECKING": "true",
        "ANSIBLE_TIMEOUT": str(CONNECT_TIMEOUT_S),
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }


@contextlib.contextmanager
def control_dir() -> Iterator[Path]:
    """A private directory for the run's ControlMaster sockets; on exit every master
    is told to exit and the directory is removed (no ssh outlives its run)."""
    path = Path(tempfile.mkdtemp(prefix="ds-ssh-"))  # short: socket path limit
    try:
        yield path
    finally:
        # all at once: each is an ssh process start plus a round trip to its master
        closing = [
            subprocess.Popen(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "master"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            for sock in path.iterdir()
        ]
        for proc in closing:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(path, ignore_errors=True)
