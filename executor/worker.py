"""The executor service: consumer-group loop, leases, adoption, cancel, shutdown.

One anyio task group holds everything:

- ``_read_loop``     XREADGROUP both job streams while there is capacity;
- ``_lease_loop``    renews every entry this executor owns (fenced, see scripts);
- ``_adopt_loop``    claims entries idle past the lease (their owner died);
- ``_control_loop``  listens for cancel broadcasts;
- ``_presence_loop`` keeps ``deploystream.executor:<name>`` fresh for ``status``;
- one ``_handle`` task per entry: intake -> dedupe -> run -> result + ACK.

Semantics (DESIGN.md "Executor semantics"), as implemented here:

- **Attempts.** ``attempt`` = ``attempt_base`` + the entry's delivery count, where
  ``attempt_base`` is 0 for a submitted job and, for an entry re-enqueued by
  ``deployctl dlq replay``, the attempt its dead letter ended at. ``seq`` restarts
  at 1 for every attempt and is gap-free within it; orchestrator-written events
  (``submitted``, ``cancel_requested``) have seq 0. An adopted run starts with a
  ``reclaimed`` event naming the previous owner.
- **Fencing.** Every write a run makes (lease renewal, events, result + ACK, dead
  letter) checks, atomically, that this consumer still holds the entry at the
  delivery count it started with. An executor that lost its entry stops the run
  (its whole process tree) and publishes nothing more.
- **Dedupe.** A job whose request already has a terminal result in its latest
  generation is ACKed and not run. ``dlq replay`` starts a new generation (it
  writes a new ``submitted`` event first), so a replay does run.
- **Cancel.** ``cancel_requested`` on the request's stream after its latest
  ``submitted`` (read when the entry is taken) or a broadcast on the control stream
  (while it runs) cancels it; cancelled before it starts, it never starts.
- **Dead letters.** Past ``max-deliveries`` the entry goes to the dead-letter
  stream with reason, delivery count and attempt, and an ``error`` result is
  published unless the request already has one. Entries that fail intake are
  dead-lettered at once; their ``rejected`` result is published only if no executor
  has started the named request (a forged entry cannot end someone else's run).
- **Adoption.** Entries idle longer than the lease are claimed (XCLAIM with the
  same min-idle, so a renewal in between wins) -- but not within one lease of this
  executor's own connection trouble, nor before Redis has been up for two leases:
  after a Redis restart every entry looks idle (its idle time counts the
  downtime), and owners get that long to reconnect and renew first.
- **Shutdown.** SIGTERM stops taking work; running playbooks get the grace period,
  then are cancelled and their entries given back (still pending, marked idle) so
  another executor adopts them at once. A second signal ends the grace at once.
  With Redis unreachable the runs are stopped all the same, and after a short
  wrap-up the executor gives up its pending writes and exits (the entries stay
  pending in Redis and are adopted once it is back).
- **Redis trouble.** Every loop retries with backoff on connection errors and
  busy/loading replies, recreates the group on NOGROUP, and logs anything else
  without dying.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from contracts import (
    Accepted,
    DeployJob,
    Event,
    Job,
    Reclaimed,
    Result,
    StreamsConfig,
    decode_control,
    decode_event,
    encode,
    job_kind,
)
from contracts.codec import MAX_JOB_BYTES, DecodeError
from deploystream import redact as redaction
from deploystream.keys import ExecutorKeys
from deploystream.redact import Redactor
from deploystream.retry import redis_call, retryable
from executor import intake
from executor.publisher import EventPublisher, Fence, Lua
from executor.runner import OpenedSecrets, RunOutcome, run_playbook
from executor.settings import ExecutorSettings
from executor.translate import translate

if TYPE_CHECKING:
    from executor.metrics import Metrics

log = structlog.get_logger(__name__)

_STATUS_MAP = {
    "successful": "success",
    "failed": "failed",
    "timeout": "timeout",
    "canceled": "canceled",
}
# Fields the executor adds to a dead letter (and the replay metadata of an entry);
# dropped from the original fields so a dead letter of a replay is not ambiguous.
_DEAD_META = (
    b"reason",
    b"delivery_count",
    b"attempt",
    b"source_stream",
    b"source_id",
    b"executor",
    b"dead_at",
)
ATTEMPT_BASE_FIELD = b"attempt_base"
REPLAY_OF_FIELD = b"replay_of"
_STATE_PAGE_FIRST = 16
# After the grace period: how long cancelled runs get to release their entries
# before their pending Redis writes are abandoned.
_ABANDON_WRAP_UP_S = 10.0
_STATE_PAGE_MAX = 1000


def _uptime_s(info: dict[str, Any]) -> int:
    """Redis uptime from INFO; on a cluster (one reply per node) the youngest node's."""
    if "uptime_in_seconds" in info:
        return int(info["uptime_in_seconds"])
    per_node = [
        int(v["uptime_in_seconds"])
        for v in info.values()
        if isinstance(v, dict) and "uptime_in_seconds" in v
    ]
    return min(per_node) if per_node else 1 << 30


def attempt_base(fields: dict[bytes, bytes]) -> int:
    """The ``attempt_base`` of an entry (0 unless ``dlq replay`` wrote it)."""
    raw = fields.get(ATTEMPT_BASE_FIELD, b"0")
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
    lost: bool = False  # lease lost: another executor owns it now
    abandoned: bool = False  # shutdown: give it back for adoption
    publisher: EventPublisher | None = None

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
    def of(cls, kind: str, cancel_data: bytes | None) -> RequestState:
        """From the state and the latest ``cancel_requested`` event's data (if any)."""
        by = None
        if cancel_data is not None:
            with contextlib.suppress(DecodeError):
                by = getattr(decode_event(cancel_data), "by", None)
        return cls(kind, canceled=cancel_data is not None, canceled_by=by)


class Executor:
    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        settings: ExecutorSettings,
        keys: ExecutorKeys,
        metrics: Metrics | None = None,
    ) -> None:
        if metrics is None:
            from executor.metrics import NULL_METRICS

            metrics = NULL_METRICS
        self.redis = redis
        self.config = config
        self.settings = settings
        self.keys = keys
        self.metrics = metrics
        self.name = settings.name
        self.group = config.groups.executors
        self.lua = Lua(redis)
        self._owned: dict[tuple[str, str], Owned] = {}
        self._slots = anyio.Semaphore(config.executor.concurrency)
        self._capacity = anyio.Event()
        self._stopping = anyio.Event()
        self._hurry = anyio.Event()
        self._idle = anyio.Event()
        self._failures: dict[str, int] = {}
        self._trouble_at = -math.inf  # monotonic time of the last Redis connection trouble
        self.log = log.bind(executor=self.name)
        self.completed = 0

    # ---------------------------------------------------------------- lifecycle
    async def ensure_groups(self) -> None:
        for stream in self.config.job_streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def stop(self) -> None:
        """Stop taking work (SIGTERM). Running jobs get the grace period; a second
        call ends the grace period at once."""
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()
        self._capacity.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        while True:
            try:
                await self.ensure_groups()
                break
            except Exception as exc:
                await self._recover("start", exc)
        self.log.info("executor.started", concurrency=self.config.executor.concurrency)
        async with anyio.create_task_group() as tg:
            background = anyio.CancelScope()

            async def run_background(*, task_status: TaskStatus[None]) -> None:
                with background:
                    async with anyio.create_task_group() as bg:
                        bg.start_soon(self._lease_loop)
                        bg.start_soon(self._adopt_loop, tg)
                        await bg.start(self._control_loop)
                        bg.start_soon(self._presence_loop)
                        task_status.started()

            await tg.start(run_background)
            task_status.started()
            await self._read_loop(tg)
            if not await self._drain():
                tg.cancel_scope.cancel()  # Redis gone for good: leave, entries pending
            background.cancel()
        with anyio.move_on_after(2), contextlib.suppress(Exception):
            await self.redis.delete(self.config.executor_key(self.name))
        self.log.info("executor.stopped", completed=self.completed)

    async def _drain(self) -> bool:
        """Grace, then cancel and give back what still runs. False if some entry
        could not even be given back (Redis unreachable throughout)."""
        grace = self.config.executor.shutdown_grace_s
        if self._owned:
            self.log.info("executor.draining", running=len(self._owned), grace_s=grace)
        with anyio.move_on_after(grace):
            async with anyio.create_task_group() as tg:

                async def idle() -> None:
                    await self._wait_idle()
                    tg.cancel_scope.cancel()

                async def hurry() -> None:
                    await self._hurry.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(idle)
                tg.start_soon(hurry)
        for owned in list(self._owned.values()):
            self.log.warning("executor.abandon", request_id=owned.request_id)
            owned.abandoned = True
            owned.cancel.set()
        with anyio.move_on_after(_ABANDON_WRAP_UP_S):
            await self._wait_idle()
        # Still not done: Redis is unreachable and their writes retry forever. Give
        # up on them -- the entries stay pending and are adopted -- rather than hang.
        for owned in list(self._owned.values()):
            if owned.publisher is not None:
                self.log.warning("executor.abort_publish", request_id=owned.request_id)
                owned.publisher.abort()
        with anyio.move_on_after(_ABANDON_WRAP_UP_S):
            await self._wait_idle()
        if self._owned:
            self.log.error("executor.exit_with_pending", entries=len(self._owned))
        return not self._owned

    async def _wait_idle(self) -> None:
        while self._owned:
            self._idle = anyio.Event()
            await self._idle.wait()

    # ---------------------------------------------------------------- Redis trouble
    async def _recover(self, where: str, exc: BaseException, max_delay: float = 2.0) -> None:
        """Log, repair what can be repaired (NOGROUP), back off. Never raises."""
        n = self._failures.get(where, 0) + 1
        self._failures[where] = n
        delay = min(max_delay, 0.05 * 2 ** min(n, 6)) * (0.5 + random.random() / 2)
        if retryable(exc):
            self._trouble_at = time.monotonic()
            if n == 1 or n % 20 == 0:
                self.log.warning("redis.unavailable", where=where, error=str(exc), tries=n)
        elif isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            # Redis came back without our data (no persistence): recreate the group.
            self.log.warning("redis.group_missing", where=where)
            with contextlib.suppress(Exception):
                await self.ensure_groups()
        else:
            self.log.error("loop.error", where=where, error=repr(exc), exc_info=exc)
            delay = max(delay, min(1.0, max_delay))
        await anyio.sleep(delay)

    def _ok(self, where: str) -> None:
        self._failures.pop(where, None)

    # ---------------------------------------------------------------- loops
    async def _read_loop(self, tg: TaskGroup) -> None:
        cfg = self.config
        streams: dict[Any, Any] = {s: ">" for s in cfg.job_streams}
        while not self._stopping.is_set():
            free = cfg.executor.concurrency - len(self._owned)
            if free <= 0:
                self._capacity = anyio.Event()
                await self._capacity.wait()
                continue
            try:
                reply = await self.redis.xreadgroup(
                    self.group,
                    self.name,
                    streams,
                    count=free,
                    block=cfg.executor.block_ms,
                )
            except Exception as exc:
                await self._recover("read", exc)
                continue
            self._ok("read")
            for stream_b, entries in reply or []:
                stream = stream_b.decode()
                for entry_id_b, fields in entries:
                    # A new entry (``>``) is always at delivery count 1.
                    owned = Owned(stream, entry_id_b.decode(), delivery=1)
                    if self._stopping.is_set():
                        # Read while SIGTERM arrived: give it straight back.
                        tg.start_soon(self._release, owned)
                        continue
                    self._owned[(stream, owned.entry_id)] = owned
                    tg.start_soon(self._handle, owned, fields, None)

    async def _lease_loop(self) -> None:
        period = self.config.executor.lease_ms / 3000
        while True:
            await anyio.sleep(period)
            owned = [o for o in self._owned.values() if not o.lost]
            if not owned:
                continue
            try:
                if isinstance(self.redis, RedisCluster):  # its pipelines refuse scripts
                    replies: list[Any] = [
                        await self.lua.renew(
                            keys=[o.stream], args=o.fence(self.name).args(self.group)
                        )
                        for o in owned
                    ]
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    for o in owned:
                        await self.lua.renew(
                            keys=[o.stream], args=o.fence(self.name).args(self.group), client=pipe
                        )
                    replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                self.log.warning("lease.renew_failed", error=str(exc))
                # Short backoff: after Redis comes back, renew before anyone adopts.
                await self._recover("lease", exc, max_delay=period / 2)
                continue
            self._ok("lease")
            for o, ok in zip(owned, replies, strict=True):
                if isinstance(ok, Exception):
                    self.log.warning("lease.renew_error", entry=o.entry_id, error=str(ok))
                elif not ok and not o.lost:
                    self.log.error("lease.lost", request_id=o.request_id, entry=o.entry_id)
                    self._lose(o)

    def _lose(self, owned: Owned) -> None:
        owned.lost = True
        owned.cancel.set()

    async def _adoption_allowed(self) -> bool:
        """Not within one lease of a Redis restart or of our own connection trouble:
        after either, every entry looks idle and its owner has not had a chance to
        renew yet."""
        lease_s = self.config.executor.lease_ms / 1000
        if time.monotonic() - self._trouble_at < lease_s:
            return False
        try:
            info = await self.redis.info("server")
        except ResponseError:  # INFO disabled (managed Redis): rely on our own view
            return True
        return _uptime_s(info) >= max(math.ceil(lease_s) + 1, math.ceil(2 * lease_s))

    async def _adopt_loop(self, tg: TaskGroup) -> None:
        cfg = self.config
        interval = cfg.executor.reclaim_interval_ms / 1000
        while True:
            await anyio.sleep(interval)
            if self._stopping.is_set():
                return
            try:
                if not await self._adoption_allowed():
                    continue
                for stream in cfg.job_streams:
                    free = cfg.executor.concurrency - len(self._owned)
                    if free <= 0 or self._stopping.is_set():
                        break
                    await self._adopt(stream, free, tg)
            except Exception as exc:
                await self._recover("adopt", exc)
                continue
            self._ok("adopt")

    async def _adopt(self, stream: str, count: int, tg: TaskGroup) -> None:
        lease = self.config.executor.lease_ms
        pending: list[dict[str, Any]] = await self.redis.xpending_range(
            stream, self.group, min="-", max="+", count=count + len(self._owned), idle=lease
        )
        taken = 0
        for p in pending:
            if taken >= count or self._stopping.is_set():
                return
            entry_id = p["message_id"].decode()
            previous = p["consumer"].decode()
            if (stream, entry_id) in self._owned:
                continue
            # Same min-idle as the query: a renewal in between makes the claim fail.
            claimed = await self.redis.xclaim(stream, self.group, self.name, lease, [entry_id])
            if not claimed:
                continue
            for claimed_id, fields in claimed:
                if not fields:  # trimmed away while pending: nothing to run
                    await self.redis.xack(stream, self.group, claimed_id)
                    continue
                rows = await self.redis.xpending_range(
                    stream, self.group, min=entry_id, max=entry_id, count=1
                )
                delivery = (
                    int(rows[0]["times_delivered"]) if rows else int(p["times_delivered"]) + 1
                )
                owned = Owned(stream, entry_id, delivery=delivery)
                self._owned[(stream, entry_id)] = owned
                taken += 1
                self.log.warning(
                    "adopt.claimed", entry=entry_id, previous_owner=previous, delivery=delivery
                )
                tg.start_soon(self._handle, owned, fields, previous)

    async def _control_loop(self, *, task_status: TaskStatus[None]) -> None:
        stream = self.config.streams.control
        last = "$"
        started = False
        while True:
            try:
                if last == "$":
                    # Resolve '$' to a concrete id so a reconnect misses nothing.
                    info = (
                        await self.redis.xinfo_stream(stream)
                        if await self.redis.exists(stream)
                        else None
                    )
                    last = info["last-generated-id"].decode() if info else "0-0"
                if not started:
                    started = True
                    task_status.started()
                reply = await self.redis.xread({stream: last}, block=1000, count=100)
            except Exception as exc:
                if not started:
                    started = True
                    task_status.started()
                await self._recover("control", exc)
                continue
            self._ok("control")
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    try:
                        cmd = decode_control(fields.get(b"data", b""))
                    except DecodeError:
                        continue
                    for o in self._owned.values():
                        if o.request_id == cmd.request_id and not o.cancel.is_set():
                            self.log.info("cancel.received", request_id=cmd.request_id)
                            o.canceled_by = cmd.by
                            o.cancel.set()

    async def _presence_loop(self) -> None:
        key = self.config.executor_key(self.name)
        ttl = max(3, self.config.executor.lease_ms * 3 // 1000)
        while True:
            try:
                await self.redis.hset(  # type: ignore[misc]
                    key,
                    mapping={
                        "name": self.name,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "state": "stopping" if self._stopping.is_set() else "running",
                        "concurrency": self.config.executor.concurrency,
                        "running": len(self._owned),
                        "requests": ",".join(
                            o.request_id for o in self._owned.values() if o.request_id
                        ),
                        "completed": self.completed,
                        "seen": time.time(),
                        "playbooks": ",".join(self.settings.playbook_names()),
                    },
                )
                await self.redis.expire(key, ttl)
            except Exception as exc:
                await self._recover("presence", exc)
                continue
            self._ok("presence")
            await anyio.sleep(min(5.0, ttl / 3))

    # ---------------------------------------------------------------- one entry
    async def _handle(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reclaimed_from: str | None,
    ) -> None:
        try:
            await self._process(owned, fields, reclaimed_from)
        except Exception:
            # A bug must not kill the executor; the entry stays pending for adoption
            # and, past max deliveries, the dead-letter stream.
            self.log.exception("handle.crashed", entry=owned.entry_id)
            owned.cancel.set()
        finally:
            self._owned.pop((owned.stream, owned.entry_id), None)
            self._capacity.set()
            self._idle.set()

    async def _request_state(self, key: str) -> RequestState:
        """Read the request's stream backwards to its latest ``submitted`` event."""
        top = "+"
        page = _STATE_PAGE_FIRST
        first: bytes | None = None
        cancel_data: bytes | None = None
        while True:
            entries = await redis_call(
                partial(self.redis.xrevrange, key, max=top, min="-", count=page)
            )
            for _, fields in entries:
                etype = fields.get(b"type", b"")
                if etype == b"cancel_requested":
                    cancel_data = cancel_data or fields.get(b"data", b"")
                    continue
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
        return RequestState.of(kind, cancel_data)

    async def _process(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reclaimed_from: str | None,
    ) -> None:
        delivery = owned.delivery
        attempt_no = attempt_base(fields) + delivery
        verdict = intake.examine(owned.stream, fields, self.keys, self.settings)
        if isinstance(verdict, intake.Rejected):
            await self._dead_letter(
                owned,
                fields,
                verdict.reason,
                verdict.request_id,
                mode="rejected",
                attempt_no=attempt_no,
            )
            self.metrics.job_refused("unknown", "rejected")
            return
        job = verdict.job
        kind = job_kind(job)
        owned.request_id = job.request_id
        bound = self.log.bind(request_id=job.request_id)
        if delivery > self.config.executor.max_deliveries:
            await self._too_many_deliveries(owned, fields, job, attempt_no)
            return
        publisher = EventPublisher(
            self.redis,
            self.config,
            job.request_id,
            fence=owned.fence(self.name),
            attempt=attempt_no,
            lua=self.lua,
            hold_ttl_s=self.config.retention.events_ttl_s + job.timeout_s,
            on_lost=lambda: self._lose(owned),
            on_published=self.metrics.events_published,
        )
        owned.publisher = publisher
        now = time.time()
        opening: list[Event] = []
        if reclaimed_from is not None:
            opening.append(
                Reclaimed(
                    request_id=job.request_id,
                    seq=0,
                    ts=now,
                    attempt=attempt_no,
                    executor=self.name,
                    previous_owner=reclaimed_from,
                    delivery_count=delivery,
                )
            )
        opening.append(
            Accepted(
                request_id=job.request_id,
                seq=0,
                ts=now,
                attempt=attempt_no,
                executor=self.name,
                delivery_count=delivery,
                kind=kind,
            )
        )
        started, cancel_data = await publisher.start(opening)
        if started == "lost":
            bound.warning("job.released", lost=True, at="start")
            return
        if started == "result":  # START has acked it
            bound.info("job.duplicate", entry=owned.entry_id)
            return
        if started == "deep":  # a long generation: page through it, then publish
            state = await self._request_state(self.config.events_key(job.request_id))
            if state.terminal:
                await self._ack_duplicate(owned, bound)
                return
            for event in opening:
                publisher.emit(event)
        else:
            state = RequestState.of(started, cancel_data or None)
        if reclaimed_from is not None:
            self.metrics.reclaimed()
        elif attempt_no == 1:
            self.metrics.queue_wait(kind, now - job.submitted_at)
        ran = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            if state.canceled or owned.cancel.is_set():
                owned.canceled_by = owned.canceled_by or state.canceled_by
                outcome = RunOutcome(status="canceled", rc=None, error="canceled before it started")
            else:
                bound.info("job.accepted", playbook=job.playbook, delivery=delivery)
                ran = True
                self.metrics.job_started(kind)
                outcome = await self._run(owned, job, verdict.playbook, publisher, attempt_no)
            # Abandoned at shutdown but it finished anyway (not stopped by us): the
            # result is still worth publishing, so only a stopped run is given back.
            if owned.lost or (owned.abandoned and outcome.status == "canceled"):
                bound.warning("job.released", lost=owned.lost, abandoned=owned.abandoned)
                await publisher.close()
                if ran:
                    self.metrics.job_released()
                if owned.abandoned and not owned.lost:
                    await self._release(owned)
                return
            result = self._result(job, outcome, attempt_no, owned, now)
            status = await publisher.finish(result)
        if status == 0:
            bound.warning("job.released", lost=True, at="finish")
            if ran:
                self.metrics.job_released()
            return
        self.completed += 1
        if status == 1:
            self.metrics.events_published(1)  # the result itself
        if ran:
            self.metrics.job_finished(kind, result.status, time.time() - now)
        else:
            self.metrics.job_refused(kind, result.status)
        bound.info(
            "job.finished", status=result.status, published=status, events=result.event_count
        )

    async def _ack_duplicate(self, owned: Owned, bound: Any) -> None:
        """The request's latest generation has a result already: never run it again."""
        bound.info("job.duplicate", entry=owned.entry_id)
        await redis_call(lambda: self.redis.xack(owned.stream, self.group, owned.entry_id))

    async def _too_many_deliveries(
        self, owned: Owned, fields: dict[bytes, bytes], job: Job, attempt_no: int
    ) -> None:
        state = await self._request_state(self.config.events_key(job.request_id))
        if state.terminal:
            await self._ack_duplicate(owned, self.log.bind(request_id=job.request_id))
            return
        limit = self.config.executor.max_deliveries
        reason = (
            f"delivered {owned.delivery} times (max {limit}): "
            "its executors died or lost it while running it"
        )
        await self._dead_letter(
            owned, fields, reason, job.request_id, mode="error", attempt_no=attempt_no
        )
        self.metrics.job_refused(job_kind(job), "error")

    async def _release(self, owned: Owned) -> None:
        """Give an entry back: pending, still ours, but idle past the lease (fenced)."""
        lease = self.config.executor.lease_ms
        try:
            with anyio.fail_after(5):
                await redis_call(
                    lambda: self.lua.release(
                        keys=[owned.stream],
                        args=[*owned.fence(self.name).args(self.group), lease],
                    )
                )
        except Exception as exc:  # it will be adopted after a lease anyway
            self.log.warning("lease.release_failed", entry=owned.entry_id, error=str(exc))

    async def _run(
        self,
        owned: Owned,
        job: Job,
        playbook: Any,
        publisher: EventPublisher,
        attempt_no: int,
    ) -> RunOutcome:
        try:
            secrets = OpenedSecrets(
                values={k: self.keys.open(v) for k, v in job.secrets.items()},
                github_token=self.keys.open(job.github_token)
                if isinstance(job, DeployJob) and job.github_token
                else None,
            )
        except Exception as exc:
            return RunOutcome(status="error", rc=None, error=f"secrets: {exc}")
        redact = Redactor(secrets.all_values())
        line_max = self.config.retention.output_line_max

        def emit_from_thread(raw: dict[str, Any]) -> None:
            if owned.lost or owned.abandoned:
                return
            event = translate(
                raw,
                request_id=job.request_id,
                attempt=attempt_no,
                ts=time.time(),
                redact=redact,
                line_max=line_max,
            )
            if event is not None:
                try:
                    publisher.emit_threadsafe(event)
                except Exception:  # the loop is shutting down: the run is being stopped
                    owned.cancel.set()

        # While it runs, the executor's own log lines mask this job's secrets too.
        with redaction.active(secrets.all_values()):
            outcome = await self._run_in_slot(owned, job, playbook, secrets, emit_from_thread)
        if outcome.error:
            outcome.error = redact(outcome.error)
        if outcome.failed_task:  # a task name is templated: it can hold a secret
            outcome.failed_task = redact(outcome.failed_task)
        return outcome

    async def _run_in_slot(
        self,
        owned: Owned,
        job: Job,
        playbook: Any,
        secrets: OpenedSecrets,
        emit_from_thread: Any,
    ) -> RunOutcome:
        async with self._slots:
            if owned.cancel.is_set():
                return RunOutcome(status="canceled", rc=None, error="canceled before it started")
            try:
                outcome = await anyio.to_thread.run_sync(
                    run_playbook,
                    job,
                    playbook,
                    self.settings,
                    secrets,
                    emit_from_thread,
                    owned.cancel,
                    self.config.executor.playbook_nice,
                )
            except Exception as exc:
                outcome = RunOutcome(status="error", rc=None, error=f"runner: {exc}")
        return outcome

    def _result(
        self, job: Job, outcome: RunOutcome, attempt_no: int, owned: Owned, started: float
    ) -> Result:
        status = _STATUS_MAP.get(outcome.status, "error")
        error = outcome.error
        if status == "failed" and not error and outcome.failed_task:
            hosts = ", ".join(outcome.failed_hosts)
            error = f"task {outcome.failed_task!r} failed on {hosts}"
        if status == "timeout":
            error = error or f"timed out after {job.timeout_s} s"
        if status == "canceled":
            by = f"canceled by {owned.canceled_by or 'request'}"
            error = f"{error} ({by})" if error else by
        url = outcome.artifacts.get("deployed_url") if status == "success" else None
        return Result(
            request_id=job.request_id,
            seq=0,
            ts=time.time(),
            attempt=attempt_no,
            status=status,  # type: ignore[arg-type]
            stats=outcome.stats,
            deployed_url=str(url) if url else None,
            rc=outcome.rc,
            error=error,
            duration_ms=int((time.time() - started) * 1000),
            executor=self.name,
            failed_hosts=outcome.failed_hosts,
            failed_task=outcome.failed_task,
        )

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
        self.log.warning(
            "job.dead_lettered", reason=reason, request_id=request_id, entry=owned.entry_id
        )
        dead: list[Any] = []
        for k, v in fields.items():
            if k not in _DEAD_META:
                if len(v) > MAX_JOB_BYTES:
                    # Can never be a valid job: keep its fingerprint, not another copy of it
                    # (a flood of 10 MB entries must not be stored twice).
                    v = f"<{len(v)} bytes, sha256 {hashlib.sha256(v).hexdigest()}>".encode()
                dead += [k, v]
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
        args = [
            *owned.fence(self.name).args(self.group),
            cfg.retention.dead_maxlen,
            cfg.retention.events_maxlen,
            cfg.retention.events_ttl_s,
            mode,
            result,
            *dead,
        ]
        done = await redis_call(
            lambda: self.lua.dead_letter(keys=[owned.stream, dead_key, events_key], args=args)
        )
        if int(done) == 0:
            self.log.warning("dead_letter.not_owner", entry=owned.entry_id)
            return
        self.metrics.dead_lettered(owned.stream)


def decode_result_fields(fields: dict[bytes, bytes]) -> Result | None:
    """Helper for readers of dead-letter results."""
    try:
        ev = decode_event(fields.get(b"data", b""))
    except DecodeError:
        return None
    return ev if isinstance(ev, Result) else None
