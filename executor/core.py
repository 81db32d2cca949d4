"""The executor's shared state and the steps every part of it uses.

``ExecutorCore`` holds the configuration, the entries this executor owns and the
shutdown events; it creates the consumer groups, handles Redis trouble for every
loop (``_recover``), and gives an entry back (``_release``) or marks it lost
(``_lose``). The loops (``executor.loops``), the dead-letter step
(``executor.dead_letters``), the playbook run (``executor.running``) and the
``Executor`` itself (``executor.worker``) build on it.
"""

from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import StreamsConfig
from deploystream.groups import ensure_groups
from deploystream.keys import ExecutorKeys
from deploystream.redis_clock import RedisClock
from deploystream.redis_errors import describe, kind
from deploystream.redis_policy import EvictionWatch
from deploystream.retry import redis_call, retryable
from executor.handover import Handover
from executor.heartbeat import Heartbeat
from executor.job_lock import LockScripts
from executor.ownership import Owned
from executor.publisher import Lua
from executor.settings import ExecutorSettings

if TYPE_CHECKING:
    from executor.metrics import Metrics

log = structlog.get_logger(__name__)


class ExecutorCore:
    """What the executor's parts share: settings, owned entries, shutdown, Redis trouble."""

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
        self.lock_scripts = LockScripts(redis)
        self.handover = Handover(redis, config, self.name, keys.peers)
        self._owned: dict[tuple[str, str], Owned] = {}
        self._slots = anyio.Semaphore(config.executor.concurrency)
        self._capacity = anyio.Event()
        self._stopping = anyio.Event()
        self._hurry = anyio.Event()
        self._idle = anyio.Event()
        self._failures: dict[str, int] = {}
        self._trouble_at = -math.inf  # monotonic time of the last Redis connection trouble
        self.log = log.bind(executor=self.name)
        # While Redis may evict our keys, no new work is taken (see redis_policy).
        self.eviction = EvictionWatch(
            redis, config.redis.url, config.redis.check_interval_s, executor=self.name
        )
        # Touched by the event loop; each run's guard stops the run when it goes silent.
        self.heartbeat: Heartbeat | None = None
        self.clock = RedisClock()  # for times other machines compare (queue wait, seen)
        self.completed = 0

    # ---------------------------------------------------------------- lifecycle
    async def ensure_groups(self) -> None:
        """Work against existing groups (``deployctl setup-redis`` creates them; the
        executor's ACL user may not). Where this Redis user may create a missing group
        (no ACL users), it does; else :class:`InfrastructureError` says what to run."""
        await ensure_groups(
            self.redis, [(stream, self.group) for stream in self.config.job_streams]
        )
        for stream in self.config.job_streams:
            # A member of the group from the start: the submit side and other executors
            # find live executors through the group's consumers (deploystream.presence).
            await self.redis.xgroup_createconsumer(stream, self.group, self.name)

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

    # ---------------------------------------------------------------- Redis trouble
    async def _recover(self, where: str, exc: BaseException, max_delay: float = 2.0) -> None:
        """Log, repair what can be repaired (NOGROUP), back off. Never raises."""
        n = self._failures.get(where, 0) + 1
        self._failures[where] = n
        delay = min(max_delay, 0.05 * 2 ** min(n, 6)) * (0.5 + random.random() / 2)
        if retryable(exc):
            self._trouble_at = time.monotonic()
            if n == 1 or n % 20 == 0:
                event = "redis.out_of_memory" if kind(exc) == "oom" else "redis.unavailable"
                self.log.warning(event, where=where, error=describe(exc), tries=n)
        elif isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            # Redis came back without our data (no persistence): recreate the group.
            self.log.warning("redis.group_missing", where=where)
            try:
                await self.ensure_groups()
            except Exception as missing:
                self.log.error("redis.group_missing", where=where, error=str(missing))
        else:
            self.log.error("loop.error", where=where, error=repr(exc), exc_info=exc)
            delay = max(delay, min(1.0, max_delay))
        await anyio.sleep(delay)

    def _ok(self, where: str) -> None:
        self._failures.pop(where, None)

    def _stop_unseen(self, owned: Owned) -> None:
        """Its events cannot be published: stop the run rather than let it go on unseen."""
        stall = self.config.executor.publish_stall_s
        owned.stop_reason = (
            f"stopped by the executor: its events could not be published for {stall:g} s "
            "(Redis out of memory or unreachable)"
        )
        self.log.error("job.stopped_unseen", request_id=owned.request_id, stalled_s=stall)
        owned.cancel.set()

    def _lose(self, owned: Owned) -> None:
        owned.lost = True
        owned.cancel.set()

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
