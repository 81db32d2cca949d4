"""The executor service: consumer-group loop, leases, adoption, cancel, shutdown.

One anyio task group holds everything:

- ``_read_loop``   XREADGROUP both job streams while there is capacity;
- ``_lease_loop``  renews every entry this executor owns (fenced, see scripts);
- ``_adopt_loop``  claims entries idle past the lease (their owner died);
- ``_control_loop`` listens for cancel broadcasts;
- one ``_handle`` task per entry: intake -> dedupe -> run -> result + ACK.

Only ``_handle`` ever ACKs, and only together with a terminal result (or a dead
letter). An entry whose lease is lost is abandoned silently: its new owner runs it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import (
    Accepted,
    DeployJob,
    Job,
    Reclaimed,
    Result,
    StreamsConfig,
    decode_control,
    decode_event,
    encode,
    job_kind,
)
from contracts.codec import DecodeError
from deploystream.keys import ExecutorKeys
from deploystream.redact import Redactor
from deploystream.redis_conn import TRANSIENT
from executor import intake
from executor.publisher import EventPublisher, retrying
from executor.runner import OpenedSecrets, RunOutcome, run_playbook
from executor.scripts import RENEW_LEASE
from executor.settings import ExecutorSettings
from executor.translate import translate

log = structlog.get_logger(__name__)

_STATUS_MAP = {
    "successful": "success",
    "failed": "failed",
    "timeout": "timeout",
    "canceled": "canceled",
}


@dataclass
class Owned:
    """An entry this executor holds in the group's pending list."""

    stream: str
    entry_id: str
    request_id: str | None = None
    started: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)
    canceled_by: str | None = None
    lost: bool = False  # lease lost: another executor owns it now
    abandoned: bool = False  # shutdown: leave pending for adoption


class Executor:
    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        settings: ExecutorSettings,
        keys: ExecutorKeys,
    ) -> None:
        self.redis = redis
        self.config = config
        self.settings = settings
        self.keys = keys
        self.name = settings.name
        self.group = config.groups.executors
        self._owned: dict[tuple[str, str], Owned] = {}
        self._slots = anyio.Semaphore(config.executor.concurrency)
        self._capacity = anyio.Event()
        self._stopping = anyio.Event()
        self._idle = anyio.Event()
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
        """Stop taking work (SIGTERM). Running jobs get the grace period."""
        self._stopping.set()
        self._capacity.set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async for attempt in retrying():
            with attempt:
                await self.ensure_groups()
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
            await self._drain()
            background.cancel()
        await self.redis.delete(self.config.executor_key(self.name))
        self.log.info("executor.stopped", completed=self.completed)

    async def _drain(self) -> None:
        grace = self.config.executor.shutdown_grace_s
        with anyio.move_on_after(grace):
            await self._wait_idle()
        for owned in list(self._owned.values()):
            self.log.warning("executor.abandon", request_id=owned.request_id)
            owned.abandoned = True
            owned.cancel.set()
        await self._wait_idle()

    async def _wait_idle(self) -> None:
        while self._owned:
            self._idle = anyio.Event()
            await self._idle.wait()

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
            except TRANSIENT as exc:
                self.log.warning("redis.unavailable", error=str(exc))
                await anyio.sleep(0.5)
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted without persistence
                    await self.ensure_groups()
                    continue
                raise
            for stream_b, entries in reply or []:
                stream = stream_b.decode()
                for entry_id_b, fields in entries:
                    entry_id = entry_id_b.decode()
                    owned = Owned(stream, entry_id)
                    self._owned[(stream, entry_id)] = owned
                    tg.start_soon(self._handle, owned, fields, None)

    async def _lease_loop(self) -> None:
        period = self.config.executor.lease_ms / 3000
        while True:
            await anyio.sleep(period)
            owned = [o for o in self._owned.values() if not o.lost]
            if not owned:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for o in owned:
                    pipe.eval(RENEW_LEASE, 1, o.stream, self.group, o.entry_id, self.name)
                replies = await pipe.execute()
            except TRANSIENT as exc:
                self.log.warning("lease.renew_failed", error=str(exc))
                continue
            for o, ok in zip(owned, replies, strict=True):
                if not ok and not o.lost:
                    self.log.error("lease.lost", request_id=o.request_id, entry=o.entry_id)
                    o.lost = True
                    o.cancel.set()

    async def _adopt_loop(self, tg: TaskGroup) -> None:
        cfg = self.config
        interval = cfg.executor.reclaim_interval_ms / 1000
        while True:
            await anyio.sleep(interval)
            if self._stopping.is_set():
                return
            for stream in cfg.job_streams:
                free = cfg.executor.concurrency - len(self._owned)
                if free <= 0:
                    break
                try:
                    await self._adopt(stream, free, tg)
                except TRANSIENT as exc:
                    self.log.warning("adopt.failed", error=str(exc))
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        await self.ensure_groups()
                    else:
                        raise

    async def _adopt(self, stream: str, count: int, tg: TaskGroup) -> None:
        lease = self.config.executor.lease_ms
        pending: list[dict[str, Any]] = await self.redis.xpending_range(
            stream, self.group, min="-", max="+", count=count, idle=lease
        )
        for p in pending:
            entry_id = p["message_id"].decode()
            previous = p["consumer"].decode()
            if previous == self.name and (stream, entry_id) in self._owned:
                continue
            claimed = await self.redis.xclaim(stream, self.group, self.name, lease, [entry_id])
            if not claimed:
                continue
            for claimed_id, fields in claimed:
                if fields is None:  # trimmed away while pending: nothing to run
                    await self.redis.xack(stream, self.group, claimed_id)
                    continue
                owned = Owned(stream, entry_id)
                self._owned[(stream, entry_id)] = owned
                delivery = int(p["times_delivered"]) + 1
                self.log.warning("adopt.claimed", entry=entry_id, previous_owner=previous)
                tg.start_soon(self._handle, owned, fields, (previous, delivery))

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
            except TRANSIENT as exc:
                self.log.warning("control.unavailable", error=str(exc))
                if not started:
                    started = True
                    task_status.started()
                await anyio.sleep(0.5)
                continue
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
                        "running": len(self._owned),
                        "completed": self.completed,
                        "seen": time.time(),
                        "playbooks": ",".join(self.settings.playbook_names()),
                    },
                )
                await self.redis.expire(key, ttl)
            except TRANSIENT:
                pass
            await anyio.sleep(min(5.0, ttl / 3))

    # ---------------------------------------------------------------- one entry
    async def _handle(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reclaimed: tuple[str, int] | None,
    ) -> None:
        try:
            await self._process(owned, fields, reclaimed)
        except Exception:
            # A bug must not kill the executor; the entry stays pending for adoption
            # and, past max deliveries, the dead-letter stream.
            self.log.exception("handle.crashed", entry=owned.entry_id)
        finally:
            self._owned.pop((owned.stream, owned.entry_id), None)
            self._capacity.set()
            self._idle.set()

    async def _delivery_count(self, owned: Owned) -> int:
        rows = await self.redis.xpending_range(
            owned.stream, self.group, min=owned.entry_id, max=owned.entry_id, count=1
        )
        return int(rows[0]["times_delivered"]) if rows else 1

    async def _process(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reclaimed: tuple[str, int] | None,
    ) -> None:
        delivery = reclaimed[1] if reclaimed else await self._delivery_count(owned)
        verdict = intake.examine(owned.stream, fields, self.keys, self.settings)
        if isinstance(verdict, intake.Rejected):
            await self._dead_letter(
                owned, fields, verdict.reason, delivery, verdict.request_id, status="rejected"
            )
            return
        job = verdict.job
        owned.request_id = job.request_id
        bound = self.log.bind(request_id=job.request_id)
        if delivery > self.config.executor.max_deliveries:
            reason = (
                f"delivered {delivery} times (max {self.config.executor.max_deliveries}): "
                "its executors died while running it"
            )
            await self._dead_letter(owned, fields, reason, delivery, job.request_id, status="error")
            return
        publisher = EventPublisher(self.redis, self.config, job.request_id)
        last_type = await self._last_event_type(publisher.key)
        if last_type == "result":
            bound.info("job.duplicate", entry=owned.entry_id)
            await self.redis.xack(owned.stream, self.group, owned.entry_id)
            return
        attempt_no = delivery
        now = time.time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            if reclaimed:
                publisher.emit(
                    Reclaimed(
                        request_id=job.request_id,
                        seq=0,
                        ts=now,
                        attempt=attempt_no,
                        executor=self.name,
                        previous_owner=reclaimed[0],
                        delivery_count=delivery,
                    )
                )
            publisher.emit(
                Accepted(
                    request_id=job.request_id,
                    seq=0,
                    ts=now,
                    attempt=attempt_no,
                    executor=self.name,
                    delivery_count=delivery,
                    kind=job_kind(job),
                )
            )
            if last_type == "cancel_requested":
                outcome = RunOutcome(status="canceled", rc=None, error="canceled before it started")
            else:
                bound.info("job.accepted", playbook=job.playbook, delivery=delivery)
                outcome = await self._run(owned, job, verdict.playbook, publisher, attempt_no)
            if owned.lost or owned.abandoned:
                bound.warning("job.released", lost=owned.lost, abandoned=owned.abandoned)
                await publisher.close()
                return
            result = self._result(job, outcome, attempt_no, owned, now)
            status = await publisher.finish(result, owned.stream, owned.entry_id, self.name)
        self.completed += 1
        bound.info(
            "job.finished", status=result.status, published=status, events=result.event_count
        )

    async def _last_event_type(self, key: str) -> str | None:
        last = await self.redis.xrevrange(key, count=1)
        if not last:
            return None
        return last[0][1].get(b"type", b"").decode() or None

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
                anyio.from_thread.run_sync(publisher.emit, event)

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
                )
            except Exception as exc:
                outcome = RunOutcome(status="error", rc=None, error=f"runner: {exc}")
        if outcome.error:
            outcome.error = redact(outcome.error)
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
            error = error or f"canceled by {owned.canceled_by or 'request'}"
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
        delivery: int,
        request_id: str | None,
        *,
        status: str,
    ) -> None:
        cfg = self.config
        self.log.warning(
            "job.dead_lettered", reason=reason, request_id=request_id, entry=owned.entry_id
        )
        dead: dict[Any, Any] = dict(fields)
        dead.update(
            {
                b"reason": reason.encode(),
                b"delivery_count": str(delivery).encode(),
                b"source_stream": owned.stream.encode(),
                b"source_id": owned.entry_id.encode(),
                b"executor": self.name.encode(),
                b"dead_at": str(time.time()).encode(),
            }
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(
            cfg.dead_key(owned.stream), dead, maxlen=cfg.retention.dead_maxlen, approximate=True
        )
        if request_id is not None:
            key = cfg.events_key(request_id)
            result = Result(
                request_id=request_id,
                seq=1,
                ts=time.time(),
                attempt=delivery,
                status=status,  # type: ignore[arg-type]
                error=reason,
                event_count=1,
                executor=self.name,
            )
            pipe.xadd(
                key,
                {"type": "result", "seq": 1, "data": encode(result)},
                maxlen=cfg.retention.events_maxlen,
                approximate=True,
            )
            pipe.expire(key, cfg.retention.events_ttl_s)
        pipe.xack(owned.stream, self.group, owned.entry_id)
        await pipe.execute()


def decode_result_fields(fields: dict[bytes, bytes]) -> Result | None:
    """Helper for readers of dead-letter results."""
    try:
        ev = decode_event(fields.get(b"data", b""))
    except DecodeError:
        return None
    return ev if isinstance(ev, Result) else None
