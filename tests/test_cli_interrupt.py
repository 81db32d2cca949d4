"""Ctrl-C on a following ``deployctl``: a real process gets a real SIGINT.

No executor runs, so the request stays queued: what the CLI says and does about it
is all there is to see. The first Ctrl-C leaves the request on its stream and says
how to follow or cancel it; a second one within a few seconds, or
``--cancel-on-interrupt``, cancels it (a ``cancel_requested`` event with the reason).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import redis

from contracts import CancelRequested, StreamsConfig
from deploystream.cli.interrupt import SECOND_CTRL_C_S
from tests.harness import DEPLOYCTL, cli_env, read_events

DEPLOY = ["deploy", "--project", "shop", "--repo", "owner/shop", "--service-port", "8000"]


def _read_until(stream: IO[bytes], done: Callable[[str], bool], timeout: float = 60) -> str:
    """Read a pipe (without blocking past ``timeout``) until ``done(text so far)``."""
    text = ""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while not done(text):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; read so far: {text!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"pipe closed; read so far: {text!r}"
            text += chunk.decode()
    return text


def _start(
    argv: list[str], redis_url: str, keys_dir: Path, tmp_path: Path
) -> subprocess.Popen[bytes]:
    env = cli_env(redis_url, keys_dir, DEPLOYSTREAM_CHECKPOINT_DB=str(tmp_path / "cp.sqlite"))
    return subprocess.Popen(
        [DEPLOYCTL, *argv, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def _submitted(proc: subprocess.Popen[bytes]) -> str:
    """The request id, once the CLI is following it (its ``submitted`` event is shown)."""
    assert proc.stdout is not None
    out = _read_until(proc.stdout, lambda t: '"type":"submitted"' in t)
    first = json.loads(out.splitlines()[0])
    return str(first["request_id"])


def _cancels(rclient: redis.Redis, config: StreamsConfig, rid: str) -> list[CancelRequested]:
    return [e for e in read_events(rclient, config, rid) if isinstance(e, CancelRequested)]


def test_ctrl_c_says_the_deploy_goes_on_with_tail_and_cancel_commands(
    redis_url: str, keys_dir: Path, tmp_path: Path, rclient: redis.Redis, config: StreamsConfig
) -> None:
    proc = _start(DEPLOY, redis_url, keys_dir, tmp_path)
    rid = _submitted(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    said = _read_until(proc.stderr, lambda t: "Ctrl-C again" in t)
    started = time.monotonic()
    assert proc.wait(30) == 130
    said += proc.stderr.read().decode()
    assert f"request {rid} goes on" in said
    assert f"deployctl tail {rid}" in said and f"deployctl cancel {rid}" in said
    assert "aborted" not in said and "Traceback" not in said
    # It waited for a second Ctrl-C, then left the request alone: still queued.
    assert time.monotonic() - started > SECOND_CTRL_C_S / 2
    assert _cancels(rclient, config, rid) == []
    assert rclient.xlen(config.streams.deploy) == 1


def test_second_ctrl_c_cancels_the_deploy_and_says_so(
    redis_url: str, keys_dir: Path, tmp_path: Path, rclient: redis.Redis, config: StreamsConfig
) -> None:
    proc = _start(DEPLOY, redis_url, keys_dir, tmp_path)
    rid = _submitted(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    said = _read_until(proc.stderr, lambda t: "Ctrl-C again" in t)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    said += proc.stderr.read().decode()
    assert f"canceled request {rid}" in said, said
    (cancel,) = _cancels(rclient, config, rid)
    assert "Ctrl-C" in cancel.reason


def test_cancel_on_interrupt_cancels_at_the_first_ctrl_c(
    redis_url: str, keys_dir: Path, tmp_path: Path, rclient: redis.Redis, config: StreamsConfig
) -> None:
    proc = _start(
        ["provision", "--server", "s1", "--cancel-on-interrupt"], redis_url, keys_dir, tmp_path
    )
    rid = _submitted(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    assert proc.stderr is not None
    said = proc.stderr.read().decode()
    assert f"canceled request {rid}" in said and "goes on" not in said, said
    assert len(_cancels(rclient, config, rid)) == 1
