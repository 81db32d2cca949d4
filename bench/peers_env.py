"""The peers' own venv (.venv-bench-peers): arq and taskiq pin redis-py < 6.

Built with ``python3 -m venv`` + ``pip install -r bench/peers.txt``; idempotent (a
stamp holds the hash of peers.txt). Peer round trips run as subprocesses of its
interpreter, so the project venv never sees their pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import PEERS_DIR, PEERS_VENV

REQUIREMENTS = Path(__file__).resolve().parent / "peers.txt"
STAMP = PEERS_VENV / ".bench-stamp"


def python() -> Path:
    return PEERS_VENV / "bin" / "python"


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ready() -> bool:
    return python().exists() and STAMP.exists() and STAMP.read_text().strip() == _digest()


def ensure(*, quiet: bool = False) -> Path:
    """Create or refresh the venv when peers.txt changed; return its interpreter."""
    if ready():
        return python()
    base = os.environ.get("BENCH_PEERS_PYTHON") or shutil.which("python3") or sys.executable
    if PEERS_VENV.exists():
        shutil.rmtree(PEERS_VENV)
    out = subprocess.DEVNULL if quiet else None
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True, stdout=out)
    # A venv is never source: keep it out of git status without touching .gitignore.
    (PEERS_VENV / ".gitignore").write_text("*\n")
    subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
        check=True,
        stdout=out,
    )  # fmt: skip
    STAMP.write_text(_digest())
    return python()


def run_peer(script: str, url: str, n: int, window: int, timeout: float = 300) -> dict[str, Any]:
    """Run ``bench/peers/<script>`` under the peers venv; its last stdout line is JSON."""
    env = dict(os.environ, BENCH_REDIS_URL=url)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        [str(python()), str(PEERS_DIR / script), url, str(n), str(window)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=PEERS_DIR,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
