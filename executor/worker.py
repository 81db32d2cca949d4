"""The executor service: consumer-group loop, leases, adoption, cancel, shutdown.

One anyio task group holds everything:

- ``_read_loop``     XREADGROUP both job streams while there is capacity;
- ``_lease_loop``    renews every entry this executor owns (fenced, see scripts);
- ``_adopt_loop``    claims entries idle past the lease (their owner died);
- ``_control_loop``  listens for cancel broadcasts;
- ``_presence_loop`` keeps ``deploystream.executor:<name>`` fresh (``status``, and
  the playbooks and declared vars it offers);
- ``_handover_loop`` takes entries other executors handed to it (``executor.handover``);
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
- **Once, and fresh** (``executor.freshness``). Otherwise START records the job as
  consumed by this entry; another entry of the same signed job (a captured entry
  added again, even after a forged ``submitted`` or after its events expired) is
  dead-lettered as a replay, and a job past its signed expiry (Redis clock) as
  expired.
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
- **Playbooks it lacks.** A valid job for a playbook this executor does not have
  is handed to a live executor that has it (its delivery count kept), and
  dead-lettered only when none is alive (``executor.handover``).
- **Redis trouble.** Every loop retries with backoff on connection errors and
  busy/loading replies, recreates the group on NOGROUP, and logs anything else
  without dying.

The parts live in their own modules, on one shared base (``executor.core``: state,
Redis trouble, giving an entry back): ``executor.loops`` (the background loops),
``executor.ownership`` (``Owned``, attempts, request state), ``executor.dead_letters``
(the dead-letter step) and ``executor.running`` (the playbook run and its result).
This module's ``Executor`` puts them together: serve, read loop, drain and one
entry's handling.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from contracts import Accepted, Event, Job, Reclaimed, job_kind
from deploystream.errors import InfrastructureError
from deploystream.redis_clock import entry_time
from deploystream.retry import redis_call
from executor import intake
from executor.dead_letters import DeadLetters
from executor.freshness import EXPIRED, REPLAYED, Consumption, refusal
from executor.heartbeat import Heartbeat
from executor.loops import BackgroundLoops
from executor.ownership import (
    Owned,
    RequestState,
    attempt_base,
    read_request_state,
)
from executor.publisher import EventPublisher
from executor.runner import RunOutcome
from executor.running import PlaybookRun

__all__ = [
    "Executor",
    "Owned",
    "RequestState",
    "attempt_base",
]

# After the grace period: how long cancelled runs get to release their entries
# before their pending Redis writes are abandoned.
_ABANDON_WRAP_UP_S = 10.0


class Executor(BackgroundLoops, DeadLetters, PlaybookRun):
    # ---------------------------------------------------------------- lifecycle
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        while True:
            try:
                await self.ensure_groups()
                await self.clock.sync(self.redis)
                break
            except InfrastructureError:
                raise  # a missing group this user may not create: retrying will not help
            except Exception as exc:
                await self._recover("start", exc)
        self.log.info("executor.started", concurrency=self.config.executor.concurrency)
        self.heartbeat = Heartbeat(self.config.executor.lease_ms, self.settings.work_dir)
        try:
            await self._serve(task_status)
        finally:
            self.heartbeat.close()
        with anyio.move_on_after(2), contextlib.suppress(Exception):
            await self.redis.delete(self.config.executor_key(self.name))
        self.log.info("executor.stopped", completed=self.completed)

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        assert self.heartbeat is not None
        heartbeat = self.heartbeat
        async with anyio.create_task_group() as tg:
            background = anyio.CancelScope()

            async def run_background(*, task_status: TaskStatus[None]) -> None:
                with background:
                    async with anyio.create_task_group() as bg:
                        bg.start_soon(heartbeat.run)
                        bg.start_soon(self._lease_loop)
                        bg.start_soon(self._adopt_loop, tg)
                        bg.start_soon(self._handover_loop, tg)
                        await bg.start(self._control_loop)
                        # Started means advertised: a submit right after sees it.
                        await bg.start(self._presence_loop)
                        bg.start_soon(self.eviction.watch)
                        task_status.started()

            await tg.start(run_background)
            self.log.info(
                "executor.started",
                concurrency=self.config.executor.concurrency,
                playbooks=self.settings.playbook_names(),
            )
            task_status.started()
            await self._read_loop(tg)
            if not await self._drain():
                tg.cancel_scope.cancel()  # Redis gone for good: leave, entries pending
            background.cancel()

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
            if self.eviction.unsafe:  # Redis may evict what we would write: take nothing
                await anyio.sleep(cfg.executor.block_ms / 1000)
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
            if owned.lock is not None:  # after the result: the next job may start
                with anyio.move_on_after(5, shield=True), contextlib.suppress(Exception):
                    await owned.lock.release()
            self._owned.pop((owned.stream, owned.entry_id), None)
            self._capacity.set()
            self._idle.set()

    async def _process(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reclaimed_from: str | None,
    ) -> None:
        delivery = owned.delivery
        attempt_no = attempt_base(fields) + delivery
        verdict = intake.examine(owned.stream, fields, self.keys, self.settings)
        if isinstance(verdict, intake.NotOffered):
            await self._not_offered(owned, fields, verdict.job, attempt_no, reclaimed_from)
            return
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
        # Read just before Redis turned evicting: held (and renewed), not started.
        await self.eviction.wait_safe()
        if delivery > self.config.executor.max_deliveries:
            await self._too_many_deliveries(owned, fields, job, attempt_no)
            return
        publisher = EventPublisher(
            self.redis,
            self.config,
            job.request_id,
            fence=owned.fence(self.name),
            signer=self.keys.signer,
            peers=self.keys.peers,
            attempt=attempt_no,
            lua=self.lua,
            hold_ttl_s=self.config.retention.events_ttl_s + job.timeout_s,
            on_lost=lambda: self._lose(owned),
            on_published=self.metrics.events_published,
            on_stalled=lambda: self._stop_unseen(owned),
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
        consumption = Consumption.of(self.config, job, verdict.digest)
        started, detail = await publisher.start(opening, consumption)
        if started == "lost":
            bound.warning("job.released", lost=True, at="start")
            return
        if started == "result":  # an executor's result is there: a duplicate
            await self._ack_duplicate(owned, bound)
            return
        if started in (REPLAYED, EXPIRED):  # refused: never runs
            await self._refuse(owned, fields, job, started, detail, attempt_no)
            return
        if started == "deep":  # a long generation: page through it, then publish
            state = await read_request_state(
                self.redis, self.config.events_key(job.request_id), self.keys
            )
            if state.terminal:
                await self._ack_duplicate(owned, bound)
                return
            started, why = await publisher.consume(consumption)
            if started == "lost":
                bound.warning("job.released", lost=True, at="start")
                return
            if started in (REPLAYED, EXPIRED):
                await self._refuse(owned, fields, job, started, why, attempt_no)
                return
            for event in opening:
                publisher.emit(event)
        else:
            state = RequestState.of(
                started, detail, self.keys, self.config.events_key(job.request_id)
            )
        if reclaimed_from is not None:
            self.metrics.reclaimed()
        elif attempt_no == 1:
            # Both ends on Redis's clock: the entry id is when Redis enqueued it.
            self.metrics.queue_wait(kind, self.clock.now() - entry_time(owned.entry_id))
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
            # A run its guard stopped (we were paused) is given back too: it runs again.
            if (
                owned.lost
                or (owned.abandoned and outcome.status == "canceled")
                or outcome.status == "orphaned"
            ):
                bound.warning("job.released", lost=owned.lost, abandoned=owned.abandoned)
                await publisher.close()
                if ran:
                    self.metrics.job_released()
                if not owned.lost:
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

    async def _refuse(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        job: Job,
        state: str,
        detail: bytes,
        attempt_no: int,
    ) -> None:
        """A replayed or expired job (executor.freshness): dead-lettered, never run."""
        reason, mode = refusal(state, detail)
        await self._dead_letter(
            owned, fields, reason, job.request_id, mode=mode, attempt_no=attempt_no
        )
        self.metrics.job_refused(job_kind(job), "rejected")

    async def _not_offered(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        job: Job,
        attempt_no: int,
        reclaimed_from: str | None,
    ) -> None:
        """A valid job for a playbook we lack: hand it to a live executor that has it,
        dead-letter it only when there is none (``executor.handover``)."""
        owned.request_id = job.request_id
        bound = self.log.bind(request_id=job.request_id)
        if owned.delivery > self.config.executor.max_deliveries:
            await self._too_many_deliveries(owned, fields, job, attempt_no)
            return
        target = await self.handover.give(owned, job.playbook, reclaimed_from)
        if target is not None:
            bound.info("job.handed_over", playbook=job.playbook, to=target, entry=owned.entry_id)
            return
        if owned.lost:
            bound.warning("job.released", lost=True, at="handover")
            return
        reason = (
            f"no live executor offers playbook {job.playbook!r} "
            f"(executor {self.name} has: {', '.join(self.settings.playbook_names())})"
        )
        await self._dead_letter(
            owned, fields, reason, job.request_id, mode="rejected", attempt_no=attempt_no
        )
        self.metrics.job_refused(job_kind(job), "rejected")

    async def _ack_duplicate(self, owned: Owned, bound: Any) -> None:
        """The request's latest generation has a result already: never run it again."""
        bound.info("job.duplicate", entry=owned.entry_id)
        await redis_call(lambda: self.redis.xack(owned.stream, self.group, owned.entry_id))

    async def _too_many_deliveries(
        self, owned: Owned, fields: dict[bytes, bytes], job: Job, attempt_no: int
    ) -> None:
        state = await read_request_state(
            self.redis, self.config.events_key(job.request_id), self.keys
        )
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
