"""The Redis settings deploystream needs, checked at start and while it runs.

A Redis that may evict keys loses jobs, events, pending lists and idempotency keys
silently: under ``allkeys-lru`` a burst of unrelated keys evicted a job stream with
its group, running jobs ended with no result and queued ones vanished. The
``volatile-*`` policies are no safer: every event stream and idempotency key has a
TTL. So ``maxmemory-policy`` must be ``noeviction`` (a full Redis then refuses
writes, which the services treat as back-pressure). Services refuse to start
otherwise (``deployctl`` exits 2, naming the policy), and :class:`EvictionWatch`
checks again every ``[redis] check-interval-s``: while the policy is unsafe it logs
an error on every check and the service takes no new work.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from deploystream.errors import BadInputError
from deploystream.redis_conn import redact_url

REQUIRED_POLICY = "noeviction"

log = structlog.get_logger(__name__)


def _policies(info: dict[str, Any]) -> list[str]:
    """``maxmemory_policy`` of INFO memory; on a cluster (one reply per node) each node's."""
    if "maxmemory_policy" in info:
        return [str(info["maxmemory_policy"])]
    return [
        str(v["maxmemory_policy"])
        for v in info.values()
        if isinstance(v, dict) and "maxmemory_policy" in v
    ]


async def eviction_problem(redis: Redis, url: str) -> str | None:
    """Why this Redis is unsafe for deploystream, or None (also when INFO is refused)."""
    try:
        info = await redis.info("memory")
    except ResponseError:  # INFO disabled (some managed Redis): nothing to check
        log.warning("redis.policy_unknown", url=redact_url(url))
        return None
    bad = sorted({p for p in _policies(info) if p != REQUIRED_POLICY})
    if not bad:
        return None
    return (
        f"Redis at {redact_url(url)} has maxmemory-policy {', '.join(bad)}: it may evict "
        "deploystream's streams and keys (jobs, events and results would vanish without "
        f"a trace); set maxmemory-policy {REQUIRED_POLICY}"
    )


async def require_no_eviction(redis: Redis, url: str) -> None:
    """Refuse to start a service against an evicting Redis (BadInputError: exit 2)."""
    problem = await eviction_problem(redis, url)
    if problem is not None:
        raise BadInputError(problem)


class EvictionWatch:
    """Re-checks the policy periodically; ``unsafe`` holds the reason while it is bad."""

    def __init__(self, redis: Redis, url: str, interval_s: float, **bind: Any) -> None:
        self._redis = redis
        self._url = url
        self._interval = interval_s
        self._log = log.bind(**bind)
        self.unsafe: str | None = None
        self._safe = anyio.Event()
        self._safe.set()

    async def wait_safe(self) -> None:
        """Return once the policy is (again) safe."""
        await self._safe.wait()

    async def watch(self) -> None:
        """Forever; never raises (Redis trouble is the other loops' business)."""
        while True:
            await anyio.sleep(self._interval)
            try:
                problem = await eviction_problem(self._redis, self._url)
            except Exception as exc:  # unreachable Redis: keep the last verdict
                self._log.debug("redis.policy_check_failed", error=str(exc))
                continue
            if problem is not None:
                self._log.error("redis.evicting_policy", problem=problem, taking_work=False)
                if self._safe.is_set():
                    self._safe = anyio.Event()
            elif self.unsafe is not None:
                self._log.warning("redis.policy_ok", taking_work=True)
                self._safe.set()
            self.unsafe = problem
