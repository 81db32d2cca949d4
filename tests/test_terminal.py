"""Terminal control characters from services never reach the operator's terminal.

A deployed service controls its health-check body and its task output; both come
back in events (``HostResult.msg``, ``Output.lines``, ``Result.error``). The review
saw ``ESC[2K`` and OSC title sequences reach the terminal raw through ``tail``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from contracts import (
    Accepted,
    HostResult,
    Output,
    Result,
    StreamsConfig,
    Submitted,
    TaskStarted,
)
from deploystream.keys import ExecutorKeys, OrchestratorKeys
from deploystream.terminal import clean, clean_event
from orchestrator.job_builder import build_provision_job
from tests.forge_support import write_batch, write_plain
from tests.harness import deployctl

# Erase line, an OSC title (BEL- and ST-terminated), an OSC 8 hyperlink, 8-bit CSI,
# backspace, carriage return, a bare ESC, DEL, a DCS string.
HOSTILE = (
    "\x1b[2K\x1b]0;owned\x07ok\x1b]2;title\x1b\\ \x1b]8;;http://evil\x07link\x1b]8;;\x07"
    " \x9b31mred\x08\r\x1b\x7f\x1bP1$r\x1b\\done"
)
CONTROLS = [chr(c) for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE, "ok link reddone"),
        ("plain text, unicode ✓ and tabs\tstay\nacross lines", None),
        ("\x1b[31mred\x1b[0m", "red"),
        ("half an escape at the end \x1b[", "half an escape at the end "),
    ],
)
def test_clean_removes_sequences_and_controls(raw: str, shown: str | None) -> None:
    out = clean(raw)
    assert out == (raw if shown is None else shown)
    assert not any(c in out for c in CONTROLS)


def test_clean_event_cleans_every_string_and_keeps_the_rest() -> None:
    event = HostResult(
        request_id="r", seq=3, ts=1.0, host="web\x1b[2K", task="T\x07", status="failed",
        msg=HOSTILE, duration_ms=5,
    )  # fmt: skip
    cleaned = clean_event(event)
    assert (cleaned.host, cleaned.task, cleaned.seq, cleaned.status) == ("web", "T", 3, "failed")
    assert not any(c in cleaned.msg for c in CONTROLS)
    ok = Output(request_id="r", seq=1, ts=1.0, lines=["fine"])
    assert clean_event(ok) is ok  # nothing to clean: no copy


def test_tail_shows_service_output_without_control_characters(
    redis_url: str, keys_dir: Path, config: StreamsConfig, rclient: redis.Redis
) -> None:
    job = build_provision_job(OrchestratorKeys.load(keys_dir), server_handle="s")
    rid, now = job.request_id, time.time()
    signer = ExecutorKeys.load(keys_dir).signer
    key = config.events_key(rid)
    write_plain(rclient, key, Submitted(request_id=rid, seq=0, ts=now, attempt=0, job=job))
    write_batch(
        rclient,
        key,
        [
            Accepted(request_id=rid, seq=1, ts=now, executor="ex-1"),
            TaskStarted(request_id=rid, seq=2, ts=now, task="Health check \x1b]0;x\x07"),
            HostResult(
                request_id=rid,
                seq=3,
                ts=now,
                host="localhost",
                task="Health check",
                status="failed",
                msg=f"body: {HOSTILE}",
            ),
            Output(request_id=rid, seq=4, ts=now, lines=[f"svc: {HOSTILE}"]),
            Result(
                request_id=rid,
                seq=5,
                ts=now,
                status="failed",
                error=f"health: {HOSTILE}",
                event_count=5,
            ),
        ],
        signer,
    )
    out = deployctl("tail", rid, redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 1, out.stderr
    assert "body: ok link reddone" in out.stdout and "svc: ok link" in out.stdout, out.stdout
    assert not any(c in out.stdout + out.stderr for c in CONTROLS if c != "\n")
    # JSON keeps the exact text, escaped by the encoder: nothing raw either.
    as_json = deployctl("tail", rid, "--json", redis_url=redis_url, keys_dir=keys_dir)
    assert not any(c in as_json.stdout for c in CONTROLS if c != "\n")
    last = json.loads(as_json.stdout.splitlines()[-1])
    assert last["error"] == f"health: {HOSTILE}"
