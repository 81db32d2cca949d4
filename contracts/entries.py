"""Field names of job-stream and dead-letter entries beyond the signed job itself.

A job entry is ``job`` (the payload), ``sig`` and ``kid``. Executors record each job
they consume under :func:`job_digest` of its payload (``StreamsConfig.consumed_key``),
as ``"<stream> <entry id>"`` of the entry that may run it. A replayed dead letter
(``deployctl dlq replay``) adds :data:`REPLAY_FIELDS`; an executor that dead-letters
an entry adds :data:`DEAD_LETTER_FIELDS` to a copy of the entry's own fields.
"""

from __future__ import annotations

import hashlib

# The attempt a replayed entry's deliveries count on from, and the dead letter it was.
ATTEMPT_BASE = b"attempt_base"
REPLAY_OF = b"replay_of"
REPLAY_FIELDS = frozenset({ATTEMPT_BASE, REPLAY_OF})

# What an executor records about why and where an entry died.
DEAD_LETTER_FIELDS = frozenset(
    {
        b"reason",
        b"delivery_count",
        b"attempt",
        b"source_stream",
        b"source_id",
        b"executor",
        b"dead_at",
        # The executor's proof that it wrote the dead letter (deploystream.proofs).
        b"dead_sig",
        b"dead_kid",
    }
)


def job_digest(payload: bytes) -> str:
    """What names a signed job in the executors' consumed-job records: a digest of the
    signed payload (request id, times and all), whatever encoding its signature has."""
    return hashlib.sha256(payload).hexdigest()[:32]
