"""The executor's background loops, next to its read loop and its runs.

- ``_lease_loop``    renews every entry this executor owns (fenced, see scripts);
- ``_adopt_loop``    claims entries idle past the lease (their owner died);
- ``_control_loop``  listens for cancel broadcasts;
- ``_presence_loop`` keeps ``deploystream.executor:<name>`` fresh for ``status``
  and the submit side (the playbooks it offers and the vars they declare);
- ``_handover_loop``  takes the entries other executors hand to it.

Each retries through ``_recover`` and never dies (see ``executor.worker``).
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from contracts import decode_control
from contracts.codec import DecodeError
from contracts.playbook_vars import encode_offers
from deploystream.errors import KeyMaterialError
from deploystream.presence import presence_period_s, presence_ttl_s
from deploystream.proofs import cancel_place, sign_presence
from executor.core import ExecutorCore
from executor.handover import Note
from executor.ownership import Owned


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


class BackgroundLoops(ExecutorCore):
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
                elif not ok and not o.lost and (o.stream, o.entry_id) in self._owned:
                    # (An entry handed over meanwhile is no longer ours: not a loss.)
                    self.log.error("lease.lost", request_id=o.request_id, entry=o.entry_id)
                    self._lose(o)
            await self._renew_locks(owned)

    async def _renew_locks(self, owned: list[Owned]) -> None:
        """The job locks expire with the lease, so they are renewed with it."""
        for o in owned:
            if o.lock is None or not o.lock.held or o.lost:
                continue
            try:
                ok = await o.lock.renew()
            except Exception as exc:  # expires only after a whole lease: retried next round
                self.log.warning("lock.renew_failed", request_id=o.request_id, error=str(exc))
                continue
            if not ok:  # someone else holds it now: never run beside them
                self.log.error("lock.lost", request_id=o.request_id, lock=o.lock.what)
                self._lose(o)

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
                if self.eviction.unsafe or not await self._adoption_allowed():
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
                    data = fields.get(b"data", b"")
                    try:
                        # Only a trusted orchestrator's signature for this stream
                        # makes it a cancel: a Redis credential alone cannot cancel.
                        self.keys.verify(
                            cancel_place(stream, last),
                            data,
                            fields.get(b"sig", b"").decode("ascii", "replace"),
                            fields.get(b"kid", b"").decode("ascii", "replace"),
                        )
                        cmd = decode_control(data)
                    except KeyMaterialError as exc:
                        self.log.warning("cancel.unverified", entry=last, reason=str(exc))
                        continue
                    except DecodeError:
                        continue
                    for o in self._owned.values():
                        if o.request_id == cmd.request_id and not o.cancel.is_set():
                            self.log.info("cancel.received", request_id=cmd.request_id)
                            o.canceled_by = cmd.by
                            o.cancel.set()

    async def _presence_loop(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        key = self.config.executor_key(self.name)
        ttl = presence_ttl_s(self.config)
        offers = encode_offers(self.settings.catalog.offers())
        started = False
        while True:
            try:
                await self.clock.sync(self.redis)
                fields = {
                    "name": self.name,
                    "host": socket.gethostname(),
                    "pid": str(os.getpid()),
                    "state": "stopping" if self._stopping.is_set() else "running",
                    "concurrency": str(self.config.executor.concurrency),
                    "running": str(len(self._owned)),
                    "requests": ",".join(
                        o.request_id for o in self._owned.values() if o.request_id
                    ),
                    "completed": str(self.completed),
                    "seen": repr(self.clock.now()),  # Redis's clock: status compares it
                    "playbooks": ",".join(self.settings.playbook_names()),
                    # Whether it clones file:// repos (the CLI refuses them otherwise).
                    "file_repos": str(int(self.settings.allow_file_repos)),
                    "vars": offers.decode(),
                }
                # Signed, so `status` shows no executor a Redis credential made up.
                await self.redis.hset(  # type: ignore[misc]
                    key, mapping=sign_presence(self.keys.signer, key, fields)
                )
                await self.redis.expire(key, ttl)
            except Exception as exc:
                if not started:
                    started = True
                    task_status.started()
                await self._recover("presence", exc)
                continue
            self._ok("presence")
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(presence_period_s(self.config))

    async def _handover_loop(self, tg: TaskGroup) -> None:
        block_s = max(0.1, self.config.executor.block_ms / 1000)
        while True:
            try:
                for note in await self.handover.receive(block_s):
                    await self._take_handed(note, tg)
            except Exception as exc:
                await self._recover("handover", exc)
                continue
            self._ok("handover")

    async def _take_handed(self, note: Note, tg: TaskGroup) -> None:
        """Run an entry another executor handed to us (still ours at that count)."""
        if (note.stream, note.entry_id) in self._owned:
            return
        fields = await self.handover.still_ours(note)
        if fields is None or (note.stream, note.entry_id) in self._owned:
            return
        owned = Owned(note.stream, note.entry_id, delivery=note.delivery)
        if self._stopping.is_set():
            await self._release(owned)  # give it straight back, for the next adopter
            return
        self._owned[(note.stream, note.entry_id)] = owned
        self.log.info("handover.taken", entry=note.entry_id, delivery=note.delivery)
        tg.start_soon(self._handle, owned, fields, note.reclaimed_from)

    async def _handle(
        self,
        owned: Owned,
        fields: dict[bytes, bytes],
        reclaimed_from: str | None,
    ) -> None:
        """One entry's task (``Executor._handle``); ``_adopt`` starts it too."""
        raise NotImplementedError
