"""Publishing a run's events: in order, numbered, pipelined.

Events are numbered (``seq``) in the event loop at the moment they are queued, so
order is exactly production order whichever thread produced them. A single
flusher task sends whatever has queued up in one pipeline (one round trip per
batch, not per event). The terminal result is sent by :meth:`finish` together
with the ACK, atomically, only after every earlier event is written.
"""

from __future__ import annotations

import math

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from contracts import Event, Result, StreamsConfig, encode
from deploystream.redis_conn import TRANSIENT
from executor.scripts import FINISH

log = structlog.get_logger(__name__)
_BATCH_MAX = 1000


def retrying() -> AsyncRetrying:
    """Retry Redis operations through restarts and dropped connections, forever."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
        reraise=True,
    )


class EventPublisher:
    def __init__(self, redis: Redis, config: StreamsConfig, request_id: str) -> None:
        self._redis = redis
        self._config = config
        self.key = config.events_key(request_id)
        self.seq = 0
        self._send: MemoryObjectSendStream[tuple[bytes, int, bytes]]
        self._recv: MemoryObjectReceiveStream[tuple[bytes, int, bytes]]
        self._send, self._recv = anyio.create_memory_object_stream(math.inf)
        self._done = anyio.Event()
        self.published = 0

    def emit(self, event: Event) -> None:
        """Number and queue one event. Call from the event loop thread only."""
        self.seq += 1
        event.seq = self.seq
        self._send.send_nowait((event.__struct_config__.tag.encode(), self.seq, encode(event)))  # type: ignore[union-attr]

    async def run(self) -> None:
        """The flusher: drain the queue in batches until :meth:`close`."""
        maxlen = self._config.retention.events_maxlen
        try:
            async with self._recv:
                async for first in self._recv:
                    batch = [first]
                    while len(batch) < _BATCH_MAX:
                        try:
                            batch.append(self._recv.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    async for attempt in retrying():
                        with attempt:
                            pipe = self._redis.pipeline(transaction=False)
                            for etype, seq, data in batch:
                                pipe.xadd(
                                    self.key,
                                    {"type": etype, "seq": seq, "data": data},
                                    maxlen=maxlen,
                                    approximate=True,
                                )
                            await pipe.execute()
                    self.published += len(batch)
        finally:
            self._done.set()

    async def close(self) -> None:
        """Stop accepting events and wait until every queued one is written."""
        await self._send.aclose()
        await self._done.wait()

    async def finish(self, result: Result, job_stream: str, entry_id: str, consumer: str) -> int:
        """Flush, then publish ``result`` and XACK in one fenced step (see scripts.FINISH).

        Returns 1 (published), 2 (a result existed: only acked) or 0 (we no longer
        own the entry: nothing published).
        """
        await self.close()
        self.seq += 1
        result.seq = self.seq
        result.event_count = self.seq
        cfg = self._config
        async for attempt in retrying():
            with attempt:
                status = await self._redis.eval(  # type: ignore[misc]
                    FINISH,
                    2,
                    job_stream,
                    self.key,
                    cfg.groups.executors,
                    entry_id,
                    consumer,
                    cfg.retention.events_maxlen,
                    cfg.retention.events_ttl_s,
                    self.seq,
                    encode(result),
                )
        return int(status)
