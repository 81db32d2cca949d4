"""Redis's clock: the one clock every machine of a deployment shares.

Times compared across machines -- a job's queue wait (enqueued by one, taken by
another), an executor's "seen" time (written by it, read by ``status`` elsewhere),
the deploy graph's wait deadline (checkpointed, maybe resumed on another machine)
-- must not subtract one machine's wall clock from another's: an executor an hour
ahead showed "-3597 s ago". They use Redis's ``TIME`` and stream ids (the
milliseconds of an entry id are Redis's clock when it was added).

:class:`RedisClock` keeps Redis's time without a round trip per reading: it is
synced with ``TIME`` now and then and advances on the local *monotonic* clock in
between (immune to the local wall clock being wrong or jumping).
"""

from __future__ import annotations

import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = structlog.get_logger(__name__)


async def redis_time(redis: Redis) -> float:
    """Redis's ``TIME`` in seconds (a cluster client answers per node: the first)."""
    reply = await redis.time()
    if isinstance(reply, dict):
        reply = next(iter(reply.values()))
    sec, usec = reply
    return int(sec) + int(usec) / 1_000_000


def entry_time(entry_id: str) -> float:
    """When Redis added a stream entry, in seconds (its id's milliseconds)."""
    return int(entry_id.split("-", 1)[0]) / 1000


class RedisClock:
    """Redis's time, read locally between syncs; the local clock until the first one."""

    def __init__(self) -> None:
        self._base: float | None = None
        self._mono = 0.0
        self._refused = False

    async def sync(self, redis: Redis) -> None:
        """Read ``TIME`` (half the round trip counts as latency). Redis trouble propagates;
        an ACL that refuses ``TIME`` leaves the local clock in use (logged once)."""
        before = time.monotonic()
        try:
            now = await redis_time(redis)
        except ResponseError as exc:
            if not self._refused:
                self._refused = True
                log.warning("redis.time_refused", error=str(exc), fallback="local clock")
            return
        after = time.monotonic()
        self._base = now + (after - before) / 2
        self._mono = after

    def now(self) -> float:
        if self._base is None:
            return time.time()
        return self._base + (time.monotonic() - self._mono)
