"""`deployctl demo` as a newcomer runs it: embedded Redis, exits 0, leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.harness import DEPLOYCTL

pytestmark = pytest.mark.slow


def _leftovers() -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "deploystream-demo-" in cmd or "deploystream-demo-" in cwd:
            found.append(f"{proc.info['pid']}: {cmd}")
    return found


def test_demo_runs_twice_and_cleans_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    # A REDIS_URL in the environment must not be touched: point it at nothing.
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    env["HOME"] = str(tmp_path)  # keys and checkpoints of the demo stay out of the real home
    for _ in range(2):
        out = subprocess.run(
            [DEPLOYCTL, "demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        text = out.stdout
        assert "embedded Redis" in text
        assert "deploystream demo" in text  # the summary table
        assert text.count("success") >= 3
        # URLs are shown while the services run; not after, when the demo stops them.
        running, _, ending = text.partition("deploystream demo")
        assert "http://localhost:" in running
        assert "http://" not in ending and "stopping the services" in ending
        executors = {
            line.split("accepted by ")[1].split()[0]
            for line in text.splitlines()
            if "accepted by " in line
        }
        assert executors  # work was taken by the group
        assert _leftovers() == []


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_demo_hosts_deploys_rolling_to_ssh_hosts_and_removes_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["HOME"] = str(tmp_path)
    before = _netns()
    out = subprocess.run(
        [DEPLOYCTL, "demo", "--hosts", "3", "--executors", "1"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if os.geteuid() == 0:
        hosts = [ln for ln in out.stdout.splitlines() if ": changed [" in ln and "http://" in ln]
        assert len(hosts) == 3, out.stdout[-3000:]
        assert len({ln.rsplit("http://", 1)[1] for ln in hosts}) == 3  # its own address each
    else:
        assert "--hosts needs root" in out.stdout
    created = _netns() - before
    assert not any(name.startswith("ds-") for name in created), created
    assert not _leftovers()
