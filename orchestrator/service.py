"""``deployctl orchestrator``: the graph as a long-lived service.

Consumes deployment requests from ``deploy.requests`` through group
``orchestrators``; each request runs the DevOps graph with the request id as
thread id, and is ACKed when the graph ends. While a graph runs, its entry's lease
is renewed; an orchestrator that dies stops renewing, and a live one adopts the
entry and runs the same thread again, which resumes from its checkpoint (or, with
no shared checkpoint, re-submits with the same idempotency key and re-attaches
to the job already running). Either way exactly one job reaches the executors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import DecodeError, Result, StreamsConfig, encode
from contracts.codec import decode_request, peek_request_id
from contracts.requests import DeployRequest
from deploystream.groups import ensure_groups
from deploystream.keys import OrchestratorKeys
from deploystream.leases import ACK_IF_OWNER, RENEW_LEASE
from deploystream.redis_conn import TRANSIENT
from deploystream.redis_policy import EvictionWatch
from orchestrator.client import StreamClient
from orchestrator.graph import DeployGraph
from orchestrator.run import open_deploy_graph, run_graph
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployState

log = structlog.get_logger(__name__)

# Requests are fenced by owner alone (delivery count 0 = any; see deploystream.leases).
_ANY = 0


@dataclass
class _Held:
    entry_id: str
    request_id: str | None = None
    since: float = field(default_factory=time.time)
    lost: bool = False


def request_state(req: DeployRequest) -> DeployState:
    """Graph input for a platform request (secrets arrive sealed)."""
    state: DeployState = {
        "request_id": req.request_id,
        "project": {"id": req.project_id, "name": req.project_name or ""},
        "env": dict(req.env),
        "extra_vars": dict(req.extra_vars),
        "modules": list(req.modules),
        "sealed_secrets": dict(req.sealed_secrets),
    }
    optional: dict[str, Any] = {
        "repo": req.repo,
        "ref": req.ref,
        "host": req.host,
        "service_port": req.service_port,
        "playbook": req.playbook,
        "timeout_s": req.timeout_s,
        "github_repo": req.github_repo,
    }
    for key, value in optional.items():
        if value is not None:
            state[key] = value  # type: ignore[literal-required]
    return state


class OrchestratorService:
    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        keys: OrchestratorKeys,
        settings: OrchestratorSettings,
        *,
        name: str,
        concurrency: int = 4,
    ) -> None:
        self.redis = redis
        self.config = config
        self.keys = keys
        self.settings = settings
        self.name = name
        self.concurrency = concurrency
        self.stream = config.streams.requests
        self.group = config.groups.orchestrators
        self.lease_ms = config.executor.lease_ms
        self._held: dict[str, _Held] = {}
        self._room = anyio.Event()
        self._stopping = anyio.Event()
        self.log = log.bind(orchestrator=name)
        # While Redis may evict our keys, no new request is taken (see redis_policy).
        self.eviction = EvictionWatch(
            redis, config.redis.url, config.redis.check_interval_s, orchestrator=name
        )

    def stop(self) -> None:
        self._stopping.set()
        self._room.set()

    async def _ensure_group(self) -> None:
        """The group is created by ``deployctl setup-redis`` (admin): the orchestrator's
        ACL user may not create one (it could read every request through it)."""
        await ensure_groups(self.redis, [(self.stream, self.group)])

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._ensure_group()
        gateway = StreamClient(self.redis, self.config, self.keys, name=self.name)
        async with (
            open_deploy_graph(gateway=gateway, keys=self.keys, settings=self.settings) as g,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(self._lease_loop)
            tg.start_soon(self._adopt_loop, g, tg)
            tg.start_soon(self.eviction.watch)
            self.log.info("orchestrator.started", concurrency=self.concurrency)
            task_status.started()
            await self._read_loop(g, tg)
            while self._held:
                self._room = anyio.Event()
                await self._room.wait()
            tg.cancel_scope.cancel()
        self.log.info("orchestrator.stopped")

    async def _read_loop(self, graph: DeployGraph, tg: TaskGroup) -> None:
        while not self._stopping.is_set():
            free = self.concurrency - len(self._held)
            if free <= 0:
                self._room = anyio.Event()
                await self._room.wait()
                continue
            if self.eviction.unsafe:
                await anyio.sleep(1.0)
                continue
            try:
                reply = await self.redis.xreadgroup(
                    self.group, self.name, {self.stream: ">"}, count=free, block=1000
                )
            except TRANSIENT as exc:
                self.log.warning("redis.unavailable", error=str(exc))
                await anyio.sleep(0.5)
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._ensure_group()
                    continue
                raise
            for _, entries in reply or []:
                for entry_id_b, fields in entries:
                    self._take(graph, tg, entry_id_b.decode(), fields)

    def _take(self, graph: DeployGraph, tg: TaskGroup, entry_id: str, fields: Any) -> None:
        held = _Held(entry_id)
        self._held[entry_id] = held
        tg.start_soon(self._handle, graph, held, fields)

    async def _lease_loop(self) -> None:
        while True:
            await anyio.sleep(self.lease_ms / 3000)
            held = [h for h in self._held.values() if not h.lost]
            if not held:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for h in held:
                    pipe.eval(RENEW_LEASE, 1, self.stream, self.group, h.entry_id, self.name, _ANY)
                replies = await pipe.execute()
            except TRANSIENT:
                continue
            for h, ok in zip(held, replies, strict=True):
                if not ok:
                    self.log.error("lease.lost", request_id=h.request_id)
                    h.lost = True

    async def _adopt_loop(self, graph: DeployGraph, tg: TaskGroup) -> None:
        while not self._stopping.is_set():
            await anyio.sleep(max(0.2, self.config.executor.reclaim_interval_ms / 1000))
            free = self.concurrency - len(self._held)
            if free <= 0 or self.eviction.unsafe:
                continue
            try:
                _, claimed, _ = await self.redis.xautoclaim(
                    self.stream, self.group, self.name, self.lease_ms, "0-0", count=free
                )
            except TRANSIENT:
                continue
            for entry_id_b, fields in claimed:
                entry_id = entry_id_b.decode()
                if entry_id in self._held or not fields:
                    continue
                self.log.warning("request.adopted", entry=entry_id)
                self._take(graph, tg, entry_id, fields)

    async def _handle(self, graph: DeployGraph, held: _Held, fields: dict[bytes, bytes]) -> None:
        try:
            # Read just before Redis turned evicting: held (and renewed), not started.
            await self.eviction.wait_safe()
            try:
                req = decode_request(fields.get(b"request", b""))
            except DecodeError as exc:
                await self._dead_letter(held, fields, f"invalid request: {exc}")
                return
            held.request_id = req.request_id
            bound = self.log.bind(request_id=req.request_id)
            bound.info("request.started")
            final = await run_graph(
                graph, request_state(req), settings=self.settings, thread_id=req.request_id
            )
            if held.lost:
                bound.warning("request.released", reason="lease lost; another orchestrator has it")
                return
            acked = await self.redis.eval(  # type: ignore[misc]
                ACK_IF_OWNER, 1, self.stream, self.group, held.entry_id, self.name, _ANY
            )
            bound.info(
                "request.finished",
                outcome=final.get("outcome"),
                acked=bool(acked),
                errors=final.get("errors", []),
            )
        except Exception:
            # Left pending: after the lease another orchestrator (or this one) resumes it.
            self.log.exception("request.crashed", entry=held.entry_id)
        finally:
            self._held.pop(held.entry_id, None)
            self._room.set()

    async def _dead_letter(self, held: _Held, fields: dict[bytes, bytes], reason: str) -> None:
        self.log.warning("request.dead_lettered", reason=reason, entry=held.entry_id)
        dead = {
            **fields,
            b"reason": reason.encode(),
            b"source_id": held.entry_id.encode(),
            b"orchestrator": self.name.encode(),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(
            self.config.dead_key(self.stream),
            dead,  # type: ignore[arg-type]
            maxlen=self.config.retention.dead_maxlen,
            approximate=True,
        )
        rid = peek_request_id(fields.get(b"request"))
        if rid:
            result = Result(
                request_id=rid,
                seq=1,
                ts=time.time(),
                status="rejected",
                error=reason,
                event_count=1,
            )
            key = self.config.events_key(rid)
            pipe.xadd(key, {"type": "result", "seq": 1, "data": encode(result)})
            pipe.expire(key, self.config.retention.events_ttl_s)
        pipe.xack(self.stream, self.group, held.entry_id)
        await pipe.execute()
