"""ssh: the same 3-host run over SSH through deploystream vs bare ansible-runner.

Three real SSH hosts (:mod:`deploystream.testhosts`: a network namespace and an
``sshd`` each; loopback addresses where namespaces cannot be made). deploystream:
``StreamClient.submit`` of one job whose target and extra hosts are the three ->
one executor process (``--ssh-key``, ``--known-hosts``) -> events until the result,
timed at the client. Bare: ``ansible_runner.run`` of the same playbook with the same
inventory lines and the same SSH settings (``executor.ssh.ssh_env``: strict host keys,
ControlPersist, pipelining). Paired, alternating order; the figure is the median of
the paired ratios; both run at the same priority (the executor's ``playbook-nice`` is
0 here). Connection setup: a fresh ``ssh HOST true`` (TCP, key exchange,
authentication, one command), against the bare run's median: the share of a run
that one round of connection setup costs (the hosts connect in parallel).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import ansible_runner
import anyio

from bench.common import PROJECT, ROOT, Bench, bench_world, median, rnd
from contracts import Job, Result
from deploystream.testhosts import Fleet, SshHost
from executor import ssh
from orchestrator.job_builder import build_provision_job

TARGET = 1.05
PLAYBOOK = "small"


def _inventory(hosts: list[SshHost], key: Path) -> str:
    """The executor's inventory lines for these hosts (executor.runner._host_line)."""
    lines = []
    for h in hosts:
        user, _, addr = h.spec.rpartition("@")
        lines.append(
            f"{addr} ansible_host={addr} ansible_port={h.port} ansible_user={user} "
            f"ansible_ssh_private_key_file={key}"
        )
    return "\n".join(lines) + "\n"


def _job(world: Bench, hosts: list[SshHost]) -> Job:
    specs: list[tuple[str, int, str | None]] = []
    for h in hosts:
        user, _, addr = h.spec.rpartition("@")
        specs.append((addr, h.port, user or None))
    return build_provision_job(
        world.orchestrator_keys(),
        server_handle=f"bench-ssh-{time.time_ns()}",
        playbook=PLAYBOOK,
        host=specs[0][0],
        ssh_port=specs[0][1],
        ssh_user=specs[0][2],
        extra_hosts=specs[1:],
        timeout_s=600,
    )


def _same_priority_config(base: Path) -> Path:
    """streams.toml with ``playbook-nice = 0``: the bare run is not niced, so on a
    busy machine a niced playbook would measure the other load, not deploystream."""
    text = (ROOT / "streams.toml").read_text()
    path = base / "streams-bench-ssh.toml"
    path.write_text(re.sub(r"(?m)^playbook-nice\s*=\s*\d+", "playbook-nice = 0", text))
    return path


def bare_run(job: Job, hosts: list[SshHost], key: Path, known_hosts: Path) -> tuple[float, str]:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    try:
        inventory = run_dir / "inventory"
        inventory.write_text(_inventory(hosts, key))
        with ssh.control_dir() as control:
            t0 = time.perf_counter()
            r = ansible_runner.run(
                private_data_dir=str(run_dir),
                playbook=str(PROJECT / f"{PLAYBOOK}.yml"),
                inventory=str(inventory),
                envvars={
                    **ssh.ssh_env(job, known_hosts, control),
                    "ANSIBLE_REMOTE_TEMP": "~/.ansible/tmp",
                },
                quiet=True,
            )
            seconds = time.perf_counter() - t0
        return seconds, str(r.status)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def deploystream_run(world: Bench, job: Job) -> tuple[float, str]:
    async def go() -> tuple[float, str]:
        async with world.client() as client:
            t0 = time.perf_counter()
            rid = await client.submit(job)
            async for _, event in client.events(rid):
                if isinstance(event, Result):
                    return time.perf_counter() - t0, event.status
        raise RuntimeError(f"no result for {rid}")

    return anyio.run(go)


def connect_once(host: SshHost, key: Path, known_hosts: Path) -> float:
    user, _, addr = host.spec.rpartition("@")
    t0 = time.perf_counter()
    subprocess.run(
        ["ssh", "-i", str(key), "-p", str(host.port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "ControlMaster=no", "-o", "ControlPath=none", f"{user}@{addr}", "true"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return time.perf_counter() - t0


def run(*, quick: bool = False) -> dict[str, Any]:
    pairs = 3 if quick else 9
    ds: list[float] = []
    bare: list[float] = []
    fleet = Fleet.create()
    try:
        hosts = [fleet.add() for _ in range(3)]
        known_hosts = fleet.known_hosts(fleet.base / "known_hosts")
        key = fleet.executor_key
        setup = [connect_once(h, key, known_hosts) for h in hosts for _ in range(3)]
        with bench_world() as world:
            world.start_executor(
                "ex-ssh",
                concurrency=1,
                DEPLOYSTREAM_SSH_KEY=str(key),
                DEPLOYSTREAM_KNOWN_HOSTS=str(known_hosts),
                DEPLOYSTREAM_CONFIG=str(_same_priority_config(world.base)),
            )
            # Warm-up (page cache, bytecode caches, the hosts' first logins), not counted.
            assert deploystream_run(world, _job(world, hosts))[1] == "success"
            bare_run(_job(world, hosts), hosts, key, known_hosts)
            for i in range(pairs):
                for which in ("ds", "bare") if i % 2 == 0 else ("bare", "ds"):
                    job = _job(world, hosts)
                    if which == "ds":
                        seconds, status = deploystream_run(world, job)
                        assert status == "success", (status, world.log("ex-ssh"))
                        ds.append(seconds)
                    else:
                        seconds, status = bare_run(job, hosts, key, known_hosts)
                        assert status == "successful", status
                        bare.append(seconds)
    finally:
        fleet.close()
    ratios = [d / b for d, b in zip(ds, bare, strict=True)]
    ratio = median(ratios)
    figures = {
        "hosts": 3,
        "network_namespaces": fleet.namespaces,
        "pairs": pairs,
        "playbook_nice": 0,
        "deploystream_median_s": rnd(median(ds)),
        "bare_median_s": rnd(median(bare)),
        "median_paired_ratio": rnd(ratio),
        "ratios": [rnd(r) for r in ratios],
        "connection_setup_ms_median": rnd(median(setup) * 1000, 1),
        "connection_setup_share_of_bare_run": rnd(median(setup) / median(bare)),
    }
    targets = [
        {"what": "deploystream / bare ansible-runner over SSH, 3 hosts (median, paired)",
         "target": f"<= {TARGET}", "value": figures["median_paired_ratio"],
         "met": ratio <= TARGET},
    ]  # fmt: skip
    notes = [
        "same inventory lines and SSH settings (strict host keys, ControlPersist, "
        "pipelining) on both sides; connection setup is one fresh `ssh HOST true`"
    ]
    return {"benchmark": "ssh", "figures": figures, "targets": targets, "notes": notes}
