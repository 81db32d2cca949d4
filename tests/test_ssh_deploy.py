"""Deploy and provision over SSH to real test hosts (deploystream/testhosts.py): rolling,
per host, with strict host keys."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploystream.embedded_redis import free_port
from deploystream.sample_service import create_sample_repo
from deploystream.testhosts import REMOTE_APPS_ROOT, Fleet, SshHost
from tests.harness import Executors, deployctl

pytestmark = pytest.mark.slow
APP = f"{REMOTE_APPS_ROOT}/sample"


@pytest.fixture
def shared_repo() -> Iterator[str]:
    """The sample repo where every host's deploy user can read it (/tmp is shared)."""
    base = Path(tempfile.mkdtemp(prefix="ds-repo-"))
    base.chmod(0o755)
    try:
        yield create_sample_repo(base / "sample")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "known_hosts"


def _executor(executors: Executors, fleet: Fleet, known_hosts: Path) -> None:
    executors.start(
        "ex-ssh",
        "--apps-root", REMOTE_APPS_ROOT,
        "--ssh-key", str(fleet.executor_key),
        "--known-hosts", str(known_hosts),
    )  # fmt: skip


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _result(stdout: str) -> dict[str, Any]:
    results = [o for o in _json_lines(stdout) if o.get("type") == "result"]
    assert results, stdout
    return results[-1]


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return dict(json.loads(resp.read()))


def _deploy(
    hosts: list[SshHost], repo: str, port: int, redis_url: str, keys_dir: Path, *extra: str
) -> Any:
    args = ["deploy", "--project", "sample", "--repo", repo, "--service-port", str(port)]
    for h in hosts:
        args += ["--host", h.spec]
    return deployctl(*args, *extra, "--json", redis_url=redis_url, keys_dir=keys_dir)


def test_rolling_deploy_to_three_ssh_hosts_each_with_its_own_copy(
    ssh_fleet: Fleet,
    executors: Executors,
    shared_repo: str,
    known_hosts: Path,
    redis_url: str,
    keys_dir: Path,
) -> None:
    hosts = [ssh_fleet.add() for _ in range(3)]
    ssh_fleet.known_hosts(known_hosts)
    _executor(executors, ssh_fleet, known_hosts)
    port = free_port()
    done = _deploy(hosts, shared_repo, port, redis_url, keys_dir, "--serial", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    result = _result(done.stdout)
    assert result["status"] == "success"
    assert list(result["hosts"]) == [h.addr for h in hosts]
    for h in hosts:
        summary = result["hosts"][h.addr]
        assert summary["status"] == "changed"
        assert summary["url"] == f"http://{h.addr}:{port}"
        assert summary["url"] in result["deployed_url"]
    # rolling, one host at a time: each host's first task starts after the previous
    # host's last one (the executor's events, in stream order)
    order = [o["host"] for o in _json_lines(done.stdout) if o.get("type") == "host_result"]
    firsts = [order.index(h.addr) for h in hosts]
    lasts = [len(order) - 1 - order[::-1].index(h.addr) for h in hosts]
    assert lasts[0] < firsts[1] and lasts[1] < firsts[2], order
    pids = set()
    for h in hosts:  # each answers on its own address, from its own copy
        answer = _get(f"http://{h.addr}:{port}/")
        own_pid = int(h.path(f"{APP}/service.pid").read_text())
        assert answer["pid"] == own_pid
        assert (h.path(APP) / "app.py").is_file()
        pids.add(own_pid)
    assert len(pids) == 3
    # the executor's key never reached a host
    key = ssh_fleet.executor_key.read_text()
    for h in hosts:
        for f in h.path(APP).rglob("*"):
            if f.is_file():
                assert key not in f.read_text(errors="replace")


def test_changed_or_unknown_host_key_fails_that_host_and_runs_nothing_there(
    ssh_fleet: Fleet,
    executors: Executors,
    shared_repo: str,
    known_hosts: Path,
    redis_url: str,
    keys_dir: Path,
) -> None:
    good, changed, unknown = (ssh_fleet.add() for _ in range(3))
    ssh_fleet.known_hosts(known_hosts, [good, changed])
    ssh_fleet.rekey(changed)  # an impostor (or a reinstall) at a known address
    _executor(executors, ssh_fleet, known_hosts)
    done = _deploy([good, changed, unknown], shared_repo, free_port(), redis_url, keys_dir)
    assert done.returncode == 1, done.stdout + done.stderr
    result = _result(done.stdout)
    assert result["status"] == "failed"
    hosts = result["hosts"]
    assert hosts[good.addr]["status"] == "changed"
    assert hosts[changed.addr]["status"] == "failed"
    assert hosts[changed.addr]["msg"].startswith(f"host key for {changed.addr} changed")
    assert hosts[unknown.addr]["status"] == "failed"
    assert hosts[unknown.addr]["msg"].startswith(f"host key for {unknown.addr} unknown")
    assert sorted(result["failed_hosts"]) == sorted([changed.addr, unknown.addr])
    assert good.path(APP).is_dir()
    for h in (changed, unknown):  # nothing ran there, not even Ansible's temp dir
        assert not h.path(APP).exists()
        assert not h.path("/home/deploy/.ansible").exists()
    # never falls back to accepting: the file still holds the old key only
    assert changed.host_key_pub not in known_hosts.read_text()
    assert unknown.addr not in known_hosts.read_text()


def test_unreachable_host_then_retry_failed_hosts_touches_only_it(
    ssh_fleet: Fleet,
    executors: Executors,
    shared_repo: str,
    known_hosts: Path,
    redis_url: str,
    keys_dir: Path,
) -> None:
    hosts = [ssh_fleet.add() for _ in range(3)]
    down = hosts[1]
    ssh_fleet.known_hosts(known_hosts)
    _executor(executors, ssh_fleet, known_hosts)
    port = free_port()
    ssh_fleet.link_down(down)
    done = _deploy(hosts, shared_repo, port, redis_url, keys_dir)
    assert done.returncode == 1, done.stdout + done.stderr
    result = _result(done.stdout)
    assert result["hosts"][down.addr]["status"] == "unreachable"
    assert result["failed_hosts"] == [down.addr]
    for h in (hosts[0], hosts[2]):
        assert result["hosts"][h.addr]["status"] == "changed"
        _get(f"http://{h.addr}:{port}/")
    before = {h.addr: h.path(f"{APP}/service.pid").read_text() for h in (hosts[0], hosts[2])}

    ssh_fleet.link_up(down)
    retried = deployctl(
        "retry", result["request_id"], "--failed-hosts", "--json",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stdout + retried.stderr
    again = _result(retried.stdout)
    assert again["status"] == "success"
    assert list(again["hosts"]) == [down.addr]  # exactly the host that failed
    _get(f"http://{down.addr}:{port}/")
    for h in (hosts[0], hosts[2]):  # the others were not touched: same service process
        assert h.path(f"{APP}/service.pid").read_text() == before[h.addr]


def test_a_failing_batch_stops_the_rollout_and_the_rest_is_not_run(
    ssh_fleet: Fleet,
    executors: Executors,
    shared_repo: str,
    known_hosts: Path,
    redis_url: str,
    keys_dir: Path,
) -> None:
    hosts = [ssh_fleet.add() for _ in range(3)]
    ssh_fleet.known_hosts(known_hosts)
    _executor(executors, ssh_fleet, known_hosts)
    ssh_fleet.link_down(hosts[0])
    port = free_port()
    # --serial 1: the first batch (hosts[0]) fails whole, so nothing else runs
    done = _deploy(hosts, shared_repo, port, redis_url, keys_dir, "--serial", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    summary = {h: s["status"] for h, s in _result(done.stdout)["hosts"].items()}
    assert summary == {
        hosts[0].addr: "unreachable",
        hosts[1].addr: "not_run",
        hosts[2].addr: "not_run",
    }
    assert not hosts[1].path(APP).exists() and not hosts[2].path(APP).exists()
    # batches of 2 with --max-fail-percent 0: one failure in the first batch stops it
    # (Ansible's default would go on, since the batch did not fail whole). Ansible
    # counts failed hosts here, not unreachable ones: hosts[0] now fails a task.
    ssh_fleet.link_up(hosts[0])
    hosts[0].path(APP).write_text("a file where the app directory goes\n")
    order = [hosts[1], hosts[0], hosts[2]]
    done = _deploy(
        order, shared_repo, port, redis_url, keys_dir, "--serial", "2", "--max-fail-percent", "0"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    result = _result(done.stdout)
    assert result["hosts"][hosts[0].addr]["status"] == "failed"
    assert result["hosts"][hosts[2].addr]["status"] == "not_run"
    assert not hosts[2].path(APP).exists()
    # the plain lines name each host's status
    tail = deployctl(
        "tail", _result(done.stdout)["request_id"], redis_url=redis_url, keys_dir=keys_dir
    )
    assert f"{hosts[2].addr}: not_run" in tail.stdout
    assert f"{hosts[0].addr}: failed" in tail.stdout


def test_hosts_add_records_keys_prints_fingerprints_and_refuses_a_changed_one(
    ssh_fleet: Fleet, tmp_path: Path, redis_url: str, keys_dir: Path
) -> None:
    a, b = ssh_fleet.add(), ssh_fleet.add()
    kh = tmp_path / "kh"
    added = deployctl(
        "hosts", "add", a.spec, b.addr, "--known-hosts", str(kh),
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    for h in (a, b):
        fp = subprocess.run(
            ["ssh-keygen", "-lf", str(h.root / "ssh_host_ed25519_key.pub")],
            capture_output=True, text=True, check=True,
        ).stdout.split()[1]  # fmt: skip
        assert fp in added.stdout
        assert h.host_key_pub in kh.read_text()
    again = deployctl(
        "hosts", "add", a.addr, "--known-hosts", str(kh), redis_url=redis_url, keys_dir=keys_dir
    )
    assert again.returncode == 0 and "already known" in again.stdout
    before = kh.read_text()
    ssh_fleet.rekey(a)
    refused = deployctl(
        "hosts", "add", a.addr, "--known-hosts", str(kh), redis_url=redis_url, keys_dir=keys_dir
    )
    assert refused.returncode == 2
    assert f"host key for {a.addr} changed" in refused.stderr
    assert kh.read_text() == before


def test_provision_a_fresh_host_over_ssh_then_deploy_to_it(
    ssh_fleet: Fleet,
    executors: Executors,
    shared_repo: str,
    known_hosts: Path,
    redis_url: str,
    keys_dir: Path,
) -> None:
    fresh = ssh_fleet.add(fresh=True)  # root takes the executor's key; no deploy user
    assert "deploy:" not in fresh.path("/etc/passwd").read_text()
    _executor(executors, ssh_fleet, known_hosts)
    root = fresh.spec_for("root")
    # strict by default: an unknown host is refused, nothing runs there
    refused = deployctl(
        "provision", "--server", "fresh-1", "--host", root, "--json",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert refused.returncode == 1
    assert _result(refused.stdout)["hosts"][fresh.addr]["msg"].startswith(
        f"host key for {fresh.addr} unknown"
    )
    assert not fresh.path(REMOTE_APPS_ROOT).exists()
    done = deployctl(
        "provision", "--server", "fresh-1", "--host", root, "--accept-new-host-key", "--json",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert _result(done.stdout)["hosts"][fresh.addr]["status"] == "changed"
    assert fresh.host_key_pub in known_hosts.read_text()  # trusted on first contact
    assert "deploy:" in fresh.path("/etc/passwd").read_text()
    pub = Path(f"{ssh_fleet.executor_key}.pub").read_text().split()[1]
    assert pub in fresh.path("/home/deploy/.ssh/authorized_keys").read_text()
    assert fresh.path(f"{REMOTE_APPS_ROOT}/.deploystream-provisioned").is_file()

    ssh_fleet.trust_test_repos(fresh)  # the file:// sample repo stands in for a git server
    port = free_port()
    deployed = _deploy([fresh], shared_repo, port, redis_url, keys_dir)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    answer = _get(f"http://{fresh.addr}:{port}/")
    assert answer["pid"] == int(fresh.path(f"{APP}/service.pid").read_text())
