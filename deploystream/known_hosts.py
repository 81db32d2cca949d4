"""Known SSH host keys: the file executors check every remote host against.

One file (``--known-hosts``, env ``DEPLOYSTREAM_KNOWN_HOSTS``, default the user's
``~/.ssh/known_hosts``), in OpenSSH's format, read and written with OpenSSH's own
tools: ``ssh-keygen -F`` looks a host up, ``ssh-keyscan`` fetches a host's keys
(``deployctl hosts add``), ``ssh-keygen -l`` prints their fingerprints.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploystream.errors import BadInputError, InfrastructureError

ENV_KNOWN_HOSTS = "DEPLOYSTREAM_KNOWN_HOSTS"
KEY_TYPES = "ed25519,ecdsa,rsa"


def default_known_hosts() -> Path:
    env = os.environ.get(ENV_KNOWN_HOSTS)
    return Path(env) if env else Path.home() / ".ssh" / "known_hosts"


def known_name(host: str, port: int = 22) -> str:
    """How OpenSSH names a host in known_hosts (``[host]:port`` off port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def lookup(known_hosts: Path, host: str, port: int = 22) -> list[str]:
    """The key lines recorded for a host (``ssh-keygen -F``; hashed entries too)."""
    if not known_hosts.is_file():
        return []
    found = subprocess.run(
        ["ssh-keygen", "-F", known_name(host, port), "-f", str(known_hosts)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return [ln for ln in found.stdout.splitlines() if ln and not ln.startswith("#")]


def _key_of(line: str) -> tuple[str, str]:
    parts = line.split()
    return parts[1], parts[2]  # (type, base64 key)


@dataclass(frozen=True)
class Added:
    name: str
    fingerprints: list[str]
    new: bool  # False: every key was already recorded


def fingerprint(line: str) -> str:
    done = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input=line, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or line.split()[1]


def add(known_hosts: Path, host: str, port: int = 22, timeout_s: int = 5) -> Added:
    """Record a host's keys as ``ssh-keyscan`` fetches them. A host already recorded
    with other keys is refused: a changed key is never replaced silently."""
    scan = subprocess.run(
        ["ssh-keyscan", "-T", str(timeout_s), "-t", KEY_TYPES, "-p", str(port), host],
        capture_output=True,
        text=True,
        timeout=timeout_s * 3 + 5,
        check=False,
    )
    lines = [ln for ln in scan.stdout.splitlines() if ln and not ln.startswith("#")]
    name = known_name(host, port)
    if not lines:
        raise InfrastructureError(f"{name}: no host key (ssh-keyscan reached no SSH server)")
    recorded = {_key_of(ln) for ln in lookup(known_hosts, host, port)}
    scanned = {_key_of(ln) for ln in lines}
    if recorded and not recorded & scanned:
        raise BadInputError(
            f"host key for {name} changed: {known_hosts} holds another key; if the server "
            f"was reinstalled, remove the old one (ssh-keygen -R '{name}' -f {known_hosts})"
        )
    fresh = [ln for ln in lines if _key_of(ln) not in recorded]
    if fresh:
        known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with known_hosts.open("a", encoding="utf-8") as fh:
            fh.write("".join(f"{name} {t} {k}\n" for t, k in map(_key_of, fresh)))
    return Added(name, [fingerprint(ln) for ln in lines], bool(fresh))
