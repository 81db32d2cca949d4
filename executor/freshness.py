"""Signed means once, and now: the consumed-job record and the signed expiry.

A job entry is signed, so it cannot be forged, but a captured entry can be added to
the job stream again. Two checks stop that, both inside the fenced START script
(:mod:`executor.scripts`), atomically with accepting the job:

- **Consumed-job record.** The first entry accepted for a signed job writes
  ``consumed:{request}:<digest of the payload>`` = ``"<stream> <entry id>"``. Any
  other entry with the same payload is a replay and never runs (its latest
  generation's ``submitted`` event may be forged, its events may have expired: the
  record does not care). Redeliveries and adoptions of *that* entry go on (same
  entry id); ``dlq replay`` moves the record to the entry it creates.
- **Signed expiry.** ``expires_at`` (stamped by the client at submit from Redis's
  TIME, inside the signature) is compared with TIME in the script: a job past it,
  with no record of its own, is refused. Records live until the expiry plus the
  run's timeout plus the skew tolerance, so one is always there for as long as a
  job could still be accepted; after that, the expiry alone refuses it.

Both clocks are Redis's; ``clock-skew-s`` only absorbs a difference between Redis
servers (a failover, Cluster nodes).

A refused replay is dead-lettered with no result (nobody is waiting for it; the
request's real result stands); an expired job is dead-lettered with a ``rejected``
result, so a caller still waiting learns why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts import Job, StreamsConfig

REPLAYED = "replayed"
EXPIRED = "expired"


@dataclass(frozen=True)
class Consumption:
    """What START needs to check and record one job's consumption."""

    key: str
    expires_at: float
    hold_s: int  # how long the record outlives the expiry: the run's timeout + skew
    skew_s: int

    @classmethod
    def of(cls, config: StreamsConfig, job: Job, digest: str) -> Consumption:
        skew = config.retention.clock_skew_s
        return cls(
            key=config.consumed_key(job.request_id, digest),
            expires_at=job.expires_at or 0.0,
            hold_s=job.timeout_s + skew,
            skew_s=skew,
        )

    def args(self) -> list[Any]:
        """START's ARGV[7..9]."""
        return [repr(self.expires_at), self.hold_s, self.skew_s]


def refusal(state: str, detail: bytes) -> tuple[str, str]:
    """The dead-letter reason and mode (see scripts.DEAD_LETTER) of a refused start."""
    text = detail.decode("utf-8", "replace")
    if state == REPLAYED:
        return (
            f"replay: this signed job was already consumed (from {text}); it runs only once",
            "none",
        )
    return (
        f"expired: the job's signed expiry passed {text} s ago (Redis clock); submit it again",
        "rejected",
    )
