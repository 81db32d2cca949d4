"""The dead-letter step, and a helper for readers of dead-letter results.

An entry past ``max-deliveries``, or one that fails intake, moves to the dead-letter
stream in one fenced step (scripts.DEAD_LETTER): copied with the reason, delivery
count and attempt, ACKed, and -- per mode -- an ``error`` or ``rejected`` result
published. Oversized fields are kept as a fingerprint, not copied. The dead letter
ends with the executor's signature over its stream and fields
(:func:`deploystream.proofs.sign_dead_letter`): ``dlq list`` shows, and ``dlq replay``
refuses, one no executor wrote; the result is signed like any other.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from contracts import Result, encode
from contracts.codec import MAX_JOB_BYTES
from contracts.entries import DEAD_LETTER_FIELDS
from deploystream.proofs import past_forged_results, sign_batch, sign_dead_letter
from deploystream.retry import redis_call
from executor.core import ExecutorCore
from executor.ownership import Owned


def original_fields(fields: dict[bytes, bytes]) -> list[Any]:
    """An entry's own fields, flattened for its dead letter: the executor's metadata
    dropped, a value too large to be a job replaced by its fingerprint."""
    dead: list[Any] = []
    for k, v in fields.items():
        # Its replay fields stay: a dead letter of a replay is not ambiguous.
        if k not in DEAD_LETTER_FIELDS:
            if len(v) > MAX_JOB_BYTES:
                # Can never be a valid job: keep its fingerprint, not another copy of it
                # (a flood of 10 MB entries must not be stored twice).
                v = f"<{len(v)} bytes, sha256 {hashlib.sha256(v).hexdigest()}>".encode()
            dead += [k, v]
    return dead


class DeadLetters(ExecutorCore):
    async def _dead_letter(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reason: str,
        request_id: str | None,
        *,
        mode: str,
        attempt_no: int,
    ) -> None:
        """Move the entry to the dead-letter stream, ACK it and (per ``mode``, see
        scripts.DEAD_LETTER) publish a terminal result -- one fenced step."""
        cfg = self.config
        dead = original_fields(fields)
        dead += [
            b"reason",
            reason.encode(),
            b"delivery_count",
            str(owned.delivery).encode(),
            b"attempt",
            str(attempt_no).encode(),
            b"source_stream",
            owned.stream.encode(),
            b"source_id",
            owned.entry_id.encode(),
            b"executor",
            self.name.encode(),
            b"dead_at",
            str(time.time()).encode(),
        ]
        dead_key = cfg.dead_key(owned.stream)
        dead += sign_dead_letter(self.keys.signer, dead_key, dead)
        result = b""
        if request_id is None:
            mode = "none"
            events_key = dead_key  # placeholder, untouched in mode 'none'
        else:
            events_key = cfg.events_key(request_id)
            result = encode(
                Result(
                    request_id=request_id,
                    seq=1,
                    ts=time.time(),
                    attempt=attempt_no,
                    status="rejected" if mode == "rejected" else "error",
                    error=reason,
                    event_count=1,
                    executor=self.name,
                )
            )
        head = [
            *owned.fence(self.name).args(self.group),
            cfg.retention.dead_maxlen,
            cfg.retention.events_ttl_s,
            mode,
            result,
            *sign_batch(self.keys.signer, events_key, [result]),
        ]

        async def step(forged: str, believed: str) -> Any:
            args = [*head, forged, believed, *dead]
            keys = [owned.stream, dead_key, events_key]
            return await redis_call(lambda: self.lua.dead_letter(keys=keys, args=args))

        def planted(entry_id: str) -> None:
            self.log.warning("result.unverified", key=events_key, entry=entry_id, at="dead_letter")

        reply = await past_forged_results(self.keys.peers, events_key, step, planted)
        done = int(reply[0])
        if int(done) == 0:
            self.log.warning("dead_letter.not_owner", entry=owned.entry_id)
            return
        # Logged once it happened: the write may have waited (a full Redis) or failed.
        self.log.warning(
            "job.dead_lettered",
            reason=reason,
            request_id=request_id,
            entry=owned.entry_id,
            result_published=int(done) == 2,
        )
        self.metrics.dead_lettered(owned.stream)
