"""The stream client: submit jobs, tail a request's events live, cancel, retry.

This is the only place the orchestrator side touches the job and event streams;
the graph reaches it through :class:`orchestrator.gateway.JobGateway`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import structlog
from redis.asyncio import Redis
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from contracts import (
    Cancel,
    CancelRequested,
    DecodeError,
    Event,
    Job,
    Result,
    StreamsConfig,
    Submitted,
    decode_event,
    encode,
    job_kind,
)
from contracts.requests import DeployRequest
from deploystream.errors import BadInputError, StreamGapError
from deploystream.keys import OrchestratorKeys
from deploystream.redis_conn import TRANSIENT

log = structlog.get_logger(__name__)

# KEYS: [idempotency key,] events key, job stream.
# ARGV: request id, idempotency ttl, submitted event, job payload, sig, kid, jobs maxlen,
#       events ttl, has-idempotency-key flag. Returns the request id that owns the job.
_SUBMIT = """
local i = 0
if ARGV[9] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return existing end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  i = 1
end
redis.call('XADD', KEYS[i + 1], '*', 'type', 'submitted', 'seq', 0, 'data', ARGV[3])
redis.call('EXPIRE', KEYS[i + 1], ARGV[8])
redis.call('XADD', KEYS[i + 2], 'MAXLEN', '~', ARGV[7], '*',
           'job', ARGV[4], 'sig', ARGV[5], 'kid', ARGV[6])
return ARGV[1]
"""


def _retrying() -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
        reraise=True,
    )


class StreamClient:
    """Implements :class:`orchestrator.gateway.JobGateway` over Redis Streams."""

    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        keys: OrchestratorKeys | None = None,
        *,
        name: str = "deployctl",
    ) -> None:
        self.redis = redis
        self.config = config
        self.keys = keys
        self.name = name

    async def submit(self, job: Job) -> str:
        if self.keys is None:
            raise BadInputError("submitting needs the orchestrator signing key")
        cfg = self.config
        stream = cfg.stream_for_kind(job_kind(job))
        payload = encode(job)
        submitted = Submitted(
            request_id=job.request_id, seq=0, ts=time.time(), attempt=0, job=job, stream=stream
        )
        keys = [cfg.events_key(job.request_id), stream]
        if job.idempotency_key:
            keys.insert(0, cfg.idempotency_key(job.idempotency_key))
        # The submitted event lives at least as long as a job may wait, then expires.
        ttl = max(cfg.retention.idempotency_ttl_s, cfg.retention.events_ttl_s + job.timeout_s)
        async for attempt in _retrying():
            with attempt:
                owner = await self.redis.eval(  # type: ignore[misc]
                    _SUBMIT,
                    len(keys),
                    *keys,
                    job.request_id,
                    cfg.retention.idempotency_ttl_s,
                    encode(submitted),
                    payload,
                    self.keys.sign(stream, payload),
                    self.keys.kid,
                    cfg.retention.jobs_maxlen,
                    ttl,
                    "1" if job.idempotency_key else "0",
                )
        request_id = owner.decode() if isinstance(owner, bytes) else str(owner)
        log.info(
            "job.submitted",
            request_id=request_id,
            stream=stream,
            duplicate=request_id != job.request_id,
        )
        return request_id

    async def exists(self, request_id: str) -> bool:
        return bool(await self.redis.exists(self.config.events_key(request_id)))

    async def events(self, request_id: str, after: str = "0") -> AsyncIterator[tuple[str, Event]]:
        """Replay from ``after`` then follow live until the terminal result.

        Blocks on XREAD (no polling). After a dropped connection or a Redis restart
        it resumes from the last id it yielded, so nothing is missed or repeated.
        ``seq`` is checked per attempt; a repeated event (a publish retried across
        a reconnect) is skipped, a hole raises :class:`StreamGapError`.
        """
        key = self.config.events_key(request_id)
        last = after
        seen: dict[int, int] = {}
        strict = after in ("0", "0-0")
        while True:
            async for attempt in _retrying():
                with attempt:
                    reply = await self.redis.xread({key: last}, block=5000, count=1000)
            for _, entries in reply or []:
                for entry_id_b, fields in entries:
                    entry_id = entry_id_b.decode()
                    last = entry_id
                    try:
                        event = decode_event(fields.get(b"data", b""))
                    except DecodeError as exc:
                        log.error("event.undecodable", request_id=request_id, error=str(exc))
                        continue
                    if event.seq > 0:
                        prev = seen.get(event.attempt)
                        if prev is not None and event.seq <= prev:
                            continue  # duplicate of an event already yielded
                        expected = (prev or 0) + 1
                        if event.seq != expected and (strict or prev is not None):
                            raise StreamGapError(
                                f"request {request_id} attempt {event.attempt}: expected seq "
                                f"{expected}, got {event.seq}"
                            )
                        seen[event.attempt] = event.seq
                    yield entry_id, event
                    if isinstance(event, Result):
                        return

    async def first_event(self, request_id: str) -> Submitted | None:
        entries = await self.redis.xrange(self.config.events_key(request_id), count=1)
        if not entries:
            return None
        event = decode_event(entries[0][1].get(b"data", b""))
        return event if isinstance(event, Submitted) else None

    async def last_result(self, request_id: str) -> Result | None:
        entries = await self.redis.xrevrange(self.config.events_key(request_id), count=1)
        if not entries or entries[0][1].get(b"type") != b"result":
            return None
        event = decode_event(entries[0][1][b"data"])
        return event if isinstance(event, Result) else None

    async def cancel(self, request_id: str, reason: str = "") -> bool:
        """Broadcast a cancel. False when the request has already finished."""
        if await self.last_result(request_id) is not None:
            return False
        cfg = self.config
        now = time.time()
        note = CancelRequested(
            request_id=request_id, seq=0, ts=now, attempt=0, by=self.name, reason=reason
        )
        pipe = self.redis.pipeline(transaction=False)
        # On the request's stream first: an executor that has not started it yet sees it.
        pipe.xadd(
            cfg.events_key(request_id), {"type": "cancel_requested", "seq": 0, "data": encode(note)}
        )
        pipe.xadd(
            cfg.streams.control,
            {"data": encode(Cancel(request_id=request_id, by=self.name, ts=now, reason=reason))},
            maxlen=cfg.retention.control_maxlen,
            approximate=True,
        )
        await pipe.execute()
        return True

    async def original_job(self, request_id: str) -> Job:
        submitted = await self.first_event(request_id)
        if submitted is None:
            raise BadInputError(f"request {request_id} not found (unknown, or its events expired)")
        return submitted.job

    async def request_deploy(self, request: DeployRequest) -> str:
        """Put a deployment request on ``deploy.requests`` (what the platform does)."""
        await self.redis.xadd(
            self.config.streams.requests,
            {"request": encode(request)},
            maxlen=self.config.retention.jobs_maxlen,
            approximate=True,
        )
        return request.request_id
