"""overhead: the same small playbook through deploystream vs bare ``ansible_runner.run``.

deploystream: ``StreamClient.submit`` -> one real executor process (``deployctl
executor``) -> ``StreamClient.events`` until the terminal result, timed at the
client. Bare: ``ansible_runner.run`` of the same playbook and inventory in this
process. The two alternate (ABBA order, so drift hits both alike); the figure is the
median of the paired ratios.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import PROJECT, Bench, bench_world, median, rnd
from contracts import Accepted, Result

TARGET = 1.03


def bare_run(playbook: str, extravars: dict[str, Any] | None = None) -> tuple[float, str]:
    """One bare ansible-runner run (local connection), timed; returns (seconds, status)."""
    import ansible_runner

    run_dir = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    try:
        inventory = run_dir / "inventory"
        inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        )
        t0 = time.perf_counter()
        r = ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook=str(PROJECT / f"{playbook}.yml"),
            inventory=str(inventory),
            extravars=extravars or {},
            quiet=True,
        )
        return time.perf_counter() - t0, str(r.status)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def deploystream_run(
    world: Bench, playbook: str, own: list[float] | None = None, **extra_vars: Any
) -> tuple[float, str]:
    """Submit -> result at the client; ``own`` gets deploystream's own share (ms):
    submit -> ``accepted`` (pick-up, checks) plus ``result`` ts -> client has it."""
    job = world.job(playbook, **extra_vars)

    async def go() -> tuple[float, str]:
        async with world.client() as client:
            wall0, t0 = time.time(), time.perf_counter()
            rid = await client.submit(job)
            accepted = None
            async for _, event in client.events(rid):
                if isinstance(event, Accepted):
                    accepted = event.ts
                if isinstance(event, Result):
                    seconds = time.perf_counter() - t0
                    if own is not None and accepted is not None:
                        own.append(((accepted - wall0) + (time.time() - event.ts)) * 1000)
                    return seconds, event.status
        raise RuntimeError(f"no result for {rid}")

    return anyio.run(go)


def run(*, quick: bool = False) -> dict[str, Any]:
    pairs = 3 if quick else 11
    ds: list[float] = []
    bare: list[float] = []
    own: list[float] = []
    with bench_world() as world:
        world.start_executor("ex-0", concurrency=1)
        # Warm-up (page cache, Python bytecode caches), not counted.
        deploystream_run(world, "small")
        bare_run("small")
        for i in range(pairs):
            order = ("ds", "bare") if i % 2 == 0 else ("bare", "ds")
            for which in order:
                if which == "ds":
                    seconds, status = deploystream_run(world, "small", own)
                    assert status == "success", status
                    ds.append(seconds)
                else:
                    seconds, status = bare_run("small")
                    assert status == "successful", status
                    bare.append(seconds)
    ratios = [d / b for d, b in zip(ds, bare, strict=True)]
    ratio = median(ratios)
    figures = {
        "pairs": pairs,
        "deploystream_median_s": rnd(median(ds)),
        "bare_median_s": rnd(median(bare)),
        "median_paired_ratio": rnd(ratio),
        "ratios": [rnd(r) for r in ratios],
        # outside ansible-runner: pick-up + checks + accepted, and result -> client
        "deploystream_own_ms_median": rnd(median(own), 1),
    }
    targets = [
        {"what": "deploystream / bare ansible-runner (median, paired)",
         "target": f"<= {TARGET}", "value": figures["median_paired_ratio"],
         "met": ratio <= TARGET},
    ]  # fmt: skip
    return {"benchmark": "overhead", "figures": figures, "targets": targets, "notes": []}
