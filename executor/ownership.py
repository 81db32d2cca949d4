"""What the executor holds and knows of an entry: ownership, attempts, request state.

- ``Owned``        an entry in this executor's pending list, with its fencing token
                   (the delivery count it holds it at) and its run's flags;
- ``attempt_base`` the attempt numbering of an entry (``dlq replay`` continues it);
- ``RequestState`` the latest generation of a request, read from its event stream
                   (``read_request_state`` pages through a long one).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import structlog
from redis.asyncio import Redis

from contracts import CancelRequested, decode_event
from contracts.codec import DecodeError
from contracts.entries import ATTEMPT_BASE
from deploystream.errors import KeyMaterialError
from deploystream.keys import ExecutorKeys
from deploystream.proofs import cancel_place, genuine_result
from deploystream.retry import redis_call
from executor.publisher import EventPublisher, Fence

if TYPE_CHECKING:
    from executor.job_lock import JobLock
log = structlog.get_logger(__name__)

_STATE_PAGE_FIRST = 16
_STATE_PAGE_MAX = 1000


def attempt_base(fields: dict[bytes, bytes]) -> int:
    """The ``attempt_base`` of an entry (0 unless ``dlq replay`` wrote it)."""
    raw = fields.get(ATTEMPT_BASE, b"0")
    try:
        base = int(raw)
    except ValueError:
        return 0
    return base if 0 <= base <= 1_000_000 else 0


@dataclass
class Owned:
    """An entry this executor holds in the group's pending list."""

    stream: str
    entry_id: str
    delivery: int = 1  # the delivery count we hold it at: our fencing token
    request_id: str | None = None
    started: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)
    canceled_by: str | None = None
    stop_reason: str | None = None  # stopped by the executor itself (events unpublishable)
    lost: bool = False  # lease lost: another executor owns it now
    abandoned: bool = False  # shutdown: give it back for adoption
    publisher: EventPublisher | None = None
    lock: JobLock | None = None  # its project's (server's) lock, once it asked for it

    def fence(self, consumer: str) -> Fence:
        return Fence(self.stream, self.entry_id, consumer, self.delivery)


@dataclass(frozen=True)
class RequestState:
    """The latest generation of a request, read from its event stream (see scripts)."""

    kind: str  # empty | submitted | running | result
    canceled: bool = False
    canceled_by: str | None = None

    @property
    def terminal(self) -> bool:
        return self.kind == "result"

    @classmethod
    def of(
        cls, kind: str, cancels: list[list[bytes]], keys: ExecutorKeys, events_key: str
    ) -> RequestState:
        """From the state and the generation's ``cancel_requested`` entries as
        ``[data, sig, kid, entry id]``, latest first: only one a trusted orchestrator
        signed for this request at the id it stands at counts (a Redis credential alone
        cannot cancel, nor re-add a copy: see deploystream.proofs.cancel_place)."""
        for data, sig, kid, entry_id in cancels:
            try:
                place = cancel_place(events_key, entry_id.decode())
                keys.verify(place, data, sig.decode(), kid.decode())
                event = decode_event(data)
            except (KeyMaterialError, DecodeError, UnicodeDecodeError) as exc:
                log.warning("cancel.unverified", key=events_key, reason=str(exc))
                continue
            if isinstance(event, CancelRequested):
                return cls(kind, canceled=True, canceled_by=event.by)
        return cls(kind)


def _genuine(keys: ExecutorKeys, key: str, fields: dict[bytes, bytes]) -> bool:
    entry = [fields.get(name, b"") for name in (b"data", b"sig", b"kid", b"n")]
    return genuine_result(keys.peers, key, entry) is not None


async def read_request_state(redis: Redis, key: str, keys: ExecutorKeys) -> RequestState:
    """Read the request's stream backwards to its latest ``submitted`` event."""
    top = "+"
    page = _STATE_PAGE_FIRST
    first: bytes | None = None
    cancels: list[list[bytes]] = []
    while True:
        entries = await redis_call(partial(redis.xrevrange, key, max=top, min="-", count=page))
        for entry_id, fields in entries:
            etype = fields.get(b"type", b"")
            if etype == b"cancel_requested":
                proof = [fields.get(name, b"") for name in (b"data", b"sig", b"kid")]
                cancels.append([*proof, entry_id])
                continue
            if etype == b"result" and not _genuine(keys, key, fields):
                log.warning("result.unverified", key=key)
                continue  # planted with a Redis credential: not this request's end
            if first is None:
                first = etype
                if etype == b"result":
                    return RequestState("result")
            if etype == b"submitted":
                break
        else:
            if len(entries) == page:
                top = "(" + entries[-1][0].decode()
                page = min(page * 4, _STATE_PAGE_MAX)
                continue
        break
    kind = {None: "empty", b"submitted": "submitted"}.get(first, "running")
    return RequestState.of(kind, cancels, keys, key)
