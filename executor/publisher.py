"""Publishing a run's events: in order, numbered, pipelined, fenced, exactly once.

Events are numbered (``seq``, restarting at 1 for every attempt) in the event loop
at the moment they are queued, so order is exactly production order whichever
thread produced them. A single flusher task sends whatever has queued up as one
batch (one round trip per batch, not per event) through the fenced PUBLISH script
(see :mod:`executor.scripts`):

- *fenced*: a batch is written only while this executor still owns the job entry
  (consumer name and delivery count); once it is not, nothing more is published and
  ``on_lost`` tells the worker to stop the run;
- *exactly once*: a per-request watermark (``attempt:seq`` of the last event
  written) makes a batch retried after a dropped connection or a Redis restart
  write nothing twice, so the stored stream never holds a duplicate ``seq``.

The terminal result is sent by :meth:`EventPublisher.finish` together with the
XACK, atomically, only after every earlier event is written.

Every batch (and the result, a batch of one) is signed with the executor's key
(:func:`deploystream.proofs.sign_batch`): one signature per round trip, so signing
costs nothing measurable at 36k events/s (see :mod:`deploystream.proofs`).

Two limits keep a run honest:

- *size*: an attempt publishes at most ``retention.request-max-events`` events, its
  result included, so a late reader can always replay the whole request (event
  streams are never trimmed). Past the limit it publishes one ``events_capped``
  event, drops the rest, and the result counts them (``events_dropped``);
- *stall*: when a batch cannot be written for ``executor.publish-stall-s`` (Redis out
  of memory, or away) ``on_stalled`` tells the worker to stop the run -- a playbook
  never runs on unseen -- and the publisher keeps retrying, so what was produced
  (and then the result) lands once Redis takes writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis

from contracts import Event, EventsCapped, Result, StreamsConfig, encode
from deploystream.keys import Signer, Trust
from deploystream.proofs import genuine_result, sign_batch
from deploystream.retry import redis_call
from executor.freshness import EXPIRED, REPLAYED, Consumption
from executor.scripts import (
    CONSUME,
    DEAD_LETTER,
    FINISH,
    PUBLISH,
    RELEASE_LEASE,
    RENEW_LEASE,
    START,
)

log = structlog.get_logger(__name__)
_BATCH_MAX = 1000


def _entry(event: Event) -> tuple[bytes, int, bytes]:
    """(type, seq, data) of a numbered event, as the PUBLISH and START scripts take it."""
    tag: str = event.__struct_config__.tag  # type: ignore[assignment]
    return tag.encode(), event.seq, encode(event)


def watermark_key(config: StreamsConfig, request_id: str) -> str:
    """Where the publish watermark of a request lives (same hash slot as its events)."""
    return f"{config.streams.events_prefix}.published:{{{request_id}}}"


class Lua:
    """The fenced scripts, registered once per Redis client (EVALSHA, reloaded on
    NOSCRIPT after a Redis restart)."""

    def __init__(self, redis: Redis) -> None:
        self.renew = redis.register_script(RENEW_LEASE)
        self.release = redis.register_script(RELEASE_LEASE)
        self.publish = redis.register_script(PUBLISH)
        self.start = redis.register_script(START)
        self.finish = redis.register_script(FINISH)
        self.dead_letter = redis.register_script(DEAD_LETTER)
        self.consume = redis.register_script(CONSUME)


@dataclass(frozen=True)
class Fence:
    """The ownership a fenced step checks: this consumer holds the entry at this count."""

    stream: str
    entry_id: str
    consumer: str
    delivery: int

    def args(self, group: str) -> list[Any]:
        return [group, self.entry_id, self.consumer, self.delivery]


class EventPublisher:
    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        request_id: str,
        *,
        fence: Fence,
        signer: Signer,
        peers: Trust | None = None,
        attempt: int = 1,
        lua: Lua | None = None,
        hold_ttl_s: int | None = None,
        on_lost: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        on_stalled: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._config = config
        self._fence = fence
        self._signer = signer
        # Whose results count as "the request has its result" (default: our own key).
        self._peers = peers or Trust({signer.kid: signer.key.verify_key}, {})
        self._lua = lua or Lua(redis)
        self.attempt = attempt
        self.key = config.events_key(request_id)
        self.watermark = watermark_key(config, request_id)
        # The watermark must outlive the run; the result shortens it to the events TTL.
        self._hold_ttl = hold_ttl_s or config.retention.idempotency_ttl_s
        self._on_lost = on_lost
        self._on_published = on_published
        self._on_stalled = on_stalled
        self._stall_s = config.executor.publish_stall_s
        self.stalled = False
        # seq of the last ordinary event; the next one is the events_capped notice.
        self._last_ordinary = config.retention.request_max_events - 2
        self.dropped = 0
        self.seq = 0
        self._send: MemoryObjectSendStream[tuple[bytes, int, bytes]]
        self._recv: MemoryObjectReceiveStream[tuple[bytes, int, bytes]]
        self._send, self._recv = anyio.create_memory_object_stream(math.inf)
        self._done = anyio.Event()
        self._closed = False
        try:  # the loop that owns this publisher, for emit_threadsafe
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.published = 0
        self.lost = False
        self.aborted = False
        self._scopes: set[anyio.CancelScope] = set()  # Redis retries abort() cancels

    def abort(self) -> None:
        """Give up: drop what is queued, stop retrying (Redis unreachable at shutdown).

        The run is then released without a result; its entry stays pending and the
        adopter runs a new attempt. Nothing half-written can follow: every write is
        one fenced script.
        """
        if not self.aborted:
            self.aborted = True
            self._closed = True
            self._send.close()
            for scope in self._scopes:
                scope.cancel()

    @contextlib.contextmanager
    def _abortable(self) -> Iterator[None]:
        scope = anyio.CancelScope()
        if self.aborted:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._scopes.discard(scope)

    def emit_threadsafe(self, event: Event) -> None:
        """Queue one event from another thread (the ansible-runner callback) without
        waiting for the event loop.

        The loop numbers it in call order (``call_soon_threadsafe`` is FIFO), so order
        is production order. The runner thread goes straight back to reading Ansible's
        output instead of blocking ~0.3 ms per event on a round trip through the loop
        (``anyio.from_thread.run_sync``), which capped publishing at ~3,600 events/s
        and slowed event-heavy playbooks. Raises ``RuntimeError`` once the loop is
        closed, like ``from_thread.run_sync``.
        """
        loop = self._loop
        if loop is None:  # not running under asyncio: fall back to the blocking hop
            anyio.from_thread.run_sync(self.emit, event)
            return
        loop.call_soon_threadsafe(self.emit, event)

    def emit(self, event: Event) -> None:
        """Number and queue one event. Call from the event loop thread only."""
        if self._closed or self.lost:
            return
        if self.seq >= self._last_ordinary:
            self.dropped += 1
            if self.seq > self._last_ordinary:
                return
            # One notice in its place; then nothing but the result.
            event = EventsCapped(
                request_id=event.request_id,
                seq=0,
                ts=event.ts,
                attempt=self.attempt,
                limit=self._config.retention.request_max_events,
            )
            log.warning("publish.capped", key=self.key, limit=event.limit)
        self.seq += 1
        event.seq = self.seq
        event.attempt = self.attempt
        self._send.send_nowait(_entry(event))

    async def start(self, opening: list[Event], consumption: Consumption) -> tuple[str, Any]:
        """Write the attempt's opening events in the same fenced step that reads the
        request's state and checks and records the job's consumption (see
        scripts.START, executor.freshness): one round trip. Call before :meth:`emit`.

        Returns the state and, for ``replayed``/``expired``, why; otherwise the
        ``cancel_requested`` entries (``[data, sig, kid, entry id]``, unverified) of the
        request's latest generation. On ``lost``, ``result``, ``replayed``,
        ``expired`` or ``deep`` no event was written and this publisher's numbering
        does not move: on ``deep`` the caller decides, and :meth:`emit` numbers the
        events again. ``result`` means an executor's signed result (the caller acks
        the duplicate); a result no executor signed reads as ``deep``.
        """
        numbered: list[tuple[bytes, int, bytes]] = []
        for seq, event in enumerate(opening, self.seq + 1):
            event.seq = seq
            event.attempt = self.attempt
            numbered.append(_entry(event))
        args = self._script_args(numbered, consumption.args())
        f = self._fence
        keys = [f.stream, self.key, self.watermark, consumption.key]
        reply = await redis_call(lambda: self._lua.start(keys=keys, args=args))
        state, detail = reply[0].decode(), reply[1]
        if state == "result" and genuine_result(self._peers, self.key, reply[2]) is None:
            # Planted with a Redis credential, not an executor's: nothing was written;
            # the caller reads the generation itself (verifying), as for 'deep'.
            log.warning("result.unverified", key=self.key, at="start")
            state = "deep"
        if state == "lost":
            self._lose()
        elif state not in ("result", "deep", REPLAYED, EXPIRED):
            self.seq += len(opening)
            self._count_published(len(opening))
        return state, detail

    async def consume(self, consumption: Consumption) -> tuple[str, bytes]:
        """START's consumption check alone (scripts.CONSUME), after a ``deep`` start:
        ``ok``, ``lost``, or a refusal (``replayed``/``expired`` and why)."""
        f = self._fence
        args = [*f.args(self._config.groups.executors), *consumption.args()]
        state_b, detail = await redis_call(
            lambda: self._lua.consume(keys=[f.stream, consumption.key], args=args)
        )
        state = state_b.decode()
        if state == "lost":
            self._lose()
        return state, detail

    async def run(self) -> None:
        """The flusher: drain the queue in batches until :meth:`close` (or abort)."""
        try:
            with self._abortable():
                async with self._recv:
                    async for first in self._recv:
                        batch = [first]
                        while len(batch) < _BATCH_MAX:
                            try:
                                batch.append(self._recv.receive_nowait())
                            except (anyio.WouldBlock, anyio.EndOfStream):
                                break
                        if self.lost or self.aborted:
                            continue  # fenced out or given up: drain and drop
                        top = await self._publish(batch)
                        if top < 0:
                            self._lose()
                            continue
                        self._count_published(len(batch))
        finally:
            self._done.set()

    def _script_args(
        self, events: list[tuple[bytes, int, bytes]], extra: list[Any] | None = None
    ) -> list[Any]:
        """ARGV of PUBLISH and START: the fence, limits, attempt, the batch's
        signature, the script's own ``extra`` arguments, then the events."""
        sig, kid = sign_batch(self._signer, self.key, [data for _, _, data in events])
        args: list[Any] = [
            *self._fence.args(self._config.groups.executors),
            self._hold_ttl,
            self.attempt,
            sig,
            kid,
            *(extra or []),
        ]
        for etype, seq, data in events:
            args += [etype, seq, data]
        return args

    def _count_published(self, n: int) -> None:
        self.published += n
        if self._on_published is not None:
            self._on_published(n)

    async def _publish(self, batch: list[tuple[bytes, int, bytes]]) -> int:
        f = self._fence
        args = self._script_args(batch)

        async def write() -> Any:
            return await redis_call(
                lambda: self._lua.publish(keys=[f.stream, self.key, self.watermark], args=args)
            )

        if self.stalled:
            return int(await write())
        with anyio.move_on_after(self._stall_s) as scope:
            top = await write()
        if scope.cancelled_caught:
            # Retries the watermark makes safe: a batch half-sent is not written twice.
            self.stalled = True
            log.error("publish.stalled", key=self.key, stalled_s=self._stall_s)
            if self._on_stalled is not None:
                self._on_stalled()
            top = await write()
        return int(top)

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            log.warning("publish.fenced_out", key=self.key, entry=self._fence.entry_id)
            if self._on_lost is not None:
                self._on_lost()

    async def close(self) -> None:
        """Stop accepting events and wait until every queued one is written."""
        self._closed = True
        await self._send.aclose()
        await self._done.wait()

    async def finish(self, result: Result) -> int:
        """Flush, then publish ``result`` and XACK in one fenced step (see scripts.FINISH).

        Returns 1 (published), 2 (a result existed: only acked) or 0 (we no longer
        own the entry: nothing published).
        """
        await self.close()
        if self.lost or self.aborted:
            return 0
        self.seq += 1
        result.seq = self.seq
        result.attempt = self.attempt
        result.event_count = self.seq
        result.events_dropped = self.dropped
        cfg = self._config
        f = self._fence
        status = 0
        with self._abortable():
            status, last = await self._finish_call(f, cfg, result, "check")
            if status == 3:  # a result is there already: is it an executor's?
                genuine = genuine_result(self._peers, self.key, last) is not None
                if not genuine:
                    log.warning("result.unverified", key=self.key, at="finish")
                status, _ = await self._finish_call(f, cfg, result, "ack" if genuine else "publish")
        if self.aborted:
            return 0
        if int(status) == 0:
            self._lose()
        return int(status)

    async def _finish_call(
        self, f: Fence, cfg: StreamsConfig, result: Result, mode: str
    ) -> tuple[int, list[bytes]]:
        """One FINISH (see scripts.FINISH): its status, and for 3 the result entry."""
        data = encode(result)
        args = [
            *f.args(cfg.groups.executors),
            cfg.retention.events_ttl_s,
            self.seq,
            data,
            *sign_batch(self._signer, self.key, [data]),
            mode,
        ]
        reply = await redis_call(
            lambda: self._lua.finish(keys=[f.stream, self.key, self.watermark], args=args)
        )
        return int(reply[0]), list(reply[1:])
