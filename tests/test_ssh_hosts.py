"""The SSH test hosts themselves: real sshd per host, files apart, unreachable on demand."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploystream.testhosts import Fleet, SshHost


def _ssh(
    fleet: Fleet, host: SshHost, known_hosts: Path, command: str
) -> subprocess.CompletedProcess[str]:
    user, _, addr = host.spec.rpartition("@")
    return subprocess.run(
        [
            "ssh", "-i", str(fleet.executor_key), "-p", str(host.port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=5",
            f"{user}@{addr}", command,
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_hosts_have_their_own_sshd_files_and_can_go_away(ssh_fleet: Fleet, tmp_path: Path) -> None:
    hosts = [ssh_fleet.add() for _ in range(3)]
    assert len({h.addr for h in hosts}) == 3
    assert len({h.host_key_pub for h in hosts}) == 3
    kh = ssh_fleet.known_hosts(tmp_path / "known_hosts")
    for h in hosts:
        done = _ssh(ssh_fleet, h, kh, f"echo {h.name} > /srv/deploystream-apps/who")
        assert done.returncode == 0, done.stderr
    for h in hosts:  # three independent copies
        seen = _ssh(ssh_fleet, h, kh, "cat /srv/deploystream-apps/who")
        assert seen.stdout.strip() == h.name
        if ssh_fleet.namespaces:
            assert h.path("/srv/deploystream-apps/who").read_text().strip() == h.name

    ssh_fleet.link_down(hosts[1])
    assert _ssh(ssh_fleet, hosts[1], kh, "true").returncode == 255
    assert _ssh(ssh_fleet, hosts[0], kh, "true").returncode == 0
    ssh_fleet.link_up(hosts[1])
    assert _ssh(ssh_fleet, hosts[1], kh, "true").returncode == 0

    ssh_fleet.rekey(hosts[2])
    changed = _ssh(ssh_fleet, hosts[2], kh, "true")
    assert changed.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr


def test_a_closed_fleet_leaves_no_namespace_link_or_process() -> None:
    fleet = Fleet.create()
    try:
        host = fleet.add()
        proc = host.proc
        assert proc is not None
    finally:
        fleet.close()
    assert proc.poll() is not None
    assert not fleet.base.exists()
    if fleet.namespaces:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert host.netns not in names
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert str(host.link) not in links
