"""One deploy of a project per host, one provision per server: the job lock.

A job locks every *scope* it touches before its playbook starts: a deploy
``deploy:<project>@<host>`` for each host it runs on (every local name is one host,
``localhost``; a remote one is ``<name>:<ssh port>``), a provision
``provision:<server handle>``. Different projects, or the same project on other hosts, do not
share a scope and run in parallel (AWX serializes a job template the same way).

In Redis (keys from ``streams.toml`` ``locks-prefix``, see
:meth:`contracts.StreamsConfig.lock_keys`), per scope:

- ``…:held:<scope>``  a string: the holder's ``<request id> <consumer> <delivery>``,
  with a TTL of two leases, renewed with the lease (``executor.loops``) and deleted
  (only by its holder) once the job's result is published. An executor that dies
  stops renewing: its lock expires after two leases (its entry is adopted after one,
  and the adopter takes the lock over). The margin keeps the lock through a renewal
  late under load or a short Redis outage; after a longer one the key may be gone
  (expired while Redis was down): the entry's owner (fenced) takes it again unless
  someone else holds it now, as its lease survives the outage.
- ``…:queue:<scope>`` the waiters: a sorted set whose members are
  ``<job entry id>|<request id>`` (so members sort in submission order) scored by
  the time they stop counting (a waiter refreshes it every poll; one whose executor
  died drops out after a lease).

ACQUIRE takes all of a job's scopes at once or none (no deadlock between jobs that
share some hosts), fenced by the job entry's ownership like every other step, and
only when no earlier waiter is queued on any of them (a later deploy never overtakes
an earlier one that waits; two that ask at the same instant on a free lock race).
A later delivery of the same request (an adopter, fenced above) takes over the lock
its previous owner left.

While it waits, the job has been accepted (its lease is renewed as for a running
job) and publishes a ``waiting`` event naming what it waits for; its timeout starts
only when the playbook starts; a cancel ends the wait and the playbook never starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

import anyio
from redis.asyncio import Redis

from contracts import DeployJob, Job, StreamsConfig, Target, Waiting
from deploystream.leases import FENCE_FN
from deploystream.retry import redis_call
from executor.publisher import Fence

# KEYS[1] job stream, then (held, queue) per scope.
# ARGV group, entry id, consumer, delivery, holder value, lock ttl ms, waiter member,
#      waiter ttl ms, request id.
# Returns {'ok'}, {'lost'} (not the entry's owner: nothing done), or
# {'held' | 'queued', scope index, holder value | waiter member} (queued as a waiter).
ACQUIRE = (
    FENCE_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {'lost'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = (#KEYS - 1) / 2
local blocked = nil
for i = 1, n do
  local held, queue = KEYS[2 * i], KEYS[2 * i + 1]
  redis.call('ZREMRANGEBYSCORE', queue, '-inf', now)
  if not blocked then
    local holder = redis.call('GET', held)
    if holder and holder ~= ARGV[5] and string.match(holder, '^(%S+)') ~= ARGV[9] then
      blocked = {'held', i, holder}
    else
      for _, m in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
        if m < ARGV[7] and (not blocked or m < blocked[3]) then blocked = {'queued', i, m} end
      end
    end
  end
end
for i = 1, n do
  local queue = KEYS[2 * i + 1]
  if blocked then
    redis.call('ZADD', queue, now + tonumber(ARGV[8]), ARGV[7])
    redis.call('PEXPIRE', queue, ARGV[8])
  else
    redis.call('ZREM', queue, ARGV[7])
    redis.call('SET', KEYS[2 * i], ARGV[5], 'PX', ARGV[6])
  end
end
if blocked then return blocked end
return {'ok'}
"""
)

# KEYS[1] job stream, then the held locks; ARGV group, entry id, consumer, delivery,
# holder value, ttl ms. 1 if every lock is still ours (renewed; one gone, expired while
# Redis was down, is taken again while the entry is ours), 0 if someone else holds one
# now (or it is gone and the entry is no longer ours).
RENEW = (
    FENCE_FN
    + """
local owner = nil
local ok = 1
for i = 2, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[5] then
    redis.call('PEXPIRE', KEYS[i], ARGV[6])
  elseif not holder then
    if owner == nil then owner = is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) end
    if owner then redis.call('SET', KEYS[i], ARGV[5], 'PX', ARGV[6]) else ok = 0 end
  else
    ok = 0
  end
end
return ok
"""
)

# KEYS (held, queue) per scope; ARGV holder value, waiter member. Deletes only our
# own locks and leaves the queues.
RELEASE = """
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  redis.call('ZREM', KEYS[i + 1], ARGV[2])
end
return 1
"""

Acquired = Literal["held", "canceled", "lost", "given_back"]


class LockScripts:
    """The lock scripts, registered once per Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.acquire = redis.register_script(ACQUIRE)
        self.renew = redis.register_script(RENEW)
        self.release = redis.register_script(RELEASE)


def _host(target: Target) -> str:
    # Every local name is the same machine; a remote one is its name and SSH port.
    return "localhost" if target.is_local else f"{target.host.lower()}:{target.port}"


def lock_scopes(job: Job) -> dict[str, str]:
    """The scopes a job locks -> what each is, in words (sorted, no duplicates)."""
    if not isinstance(job, DeployJob):  # a provision: its server, whatever its address
        return {f"provision:{job.server_handle}": f"server {job.server_handle}"}
    hosts = sorted({_host(t) for t in [job.target, *job.hosts]})
    scopes = {f"deploy:{job.project_name}@{h}": f"project {job.project_name} on {h}" for h in hosts}
    return dict(sorted(scopes.items()))


def _member(entry_id: str, request_id: str) -> str:
    """A waiter, sorting in submission order: the entry id, zero-padded."""
    ms, _, seq = entry_id.partition("-")
    return f"{int(ms):015d}-{int(seq or 0):010d}|{request_id}"


class JobLock:
    """The lock of one job: acquire (waiting visibly), renew with the lease, release."""

    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        scripts: LockScripts,
        job: Job,
        fence: Fence,
    ) -> None:
        self._config = config
        self._scripts = scripts
        self._fence = fence
        self.request_id = job.request_id
        self.scopes = lock_scopes(job)
        self.held_keys = [config.lock_keys(s)[0] for s in self.scopes]
        self._keys = [k for s in self.scopes for k in config.lock_keys(s)]
        self.value = f"{job.request_id} {fence.consumer} {fence.delivery}"
        self._member = _member(fence.entry_id, job.request_id)
        self.held = False
        self.what = ", ".join(self.scopes.values())
        # Two leases: renewed every third of one, it outlasts a late renewal or a
        # short outage (see the module docstring).
        self.ttl_ms = 2 * config.executor.lease_ms

    async def acquire(
        self,
        cancel: threading.Event,
        on_wait: Callable[[Waiting], None],
        give_back: Callable[[], bool] = lambda: False,
    ) -> Acquired:
        """Take every scope, waiting as long as it takes; ``on_wait`` gets a
        ``waiting`` event each time the request it waits on changes. While it waits,
        ``give_back()`` true (the executor is shutting down) ends the wait: the job has
        not started, so another executor had better take it now."""
        cfg = self._config
        f = self._fence
        args = [
            *f.args(cfg.groups.executors),
            self.value,
            self.ttl_ms,
            self._member,
            cfg.executor.lease_ms,
            self.request_id,
        ]
        last: tuple[str, str] | None = None
        while True:
            if cancel.is_set():
                await self.release()  # leave the queue at once
                return "canceled"
            reply = await redis_call(
                lambda: self._scripts.acquire(keys=[f.stream, *self._keys], args=args)
            )
            kind = _text(reply[0])
            if kind == "ok":
                self.held = True
                return "held"
            if kind == "lost":
                return "lost"
            if give_back():
                await self.release()
                return "given_back"
            scope = list(self.scopes.values())[int(reply[1]) - 1]
            holder = _text(reply[2])
            other = holder.split("|", 1)[1] if kind == "queued" else holder.split(" ", 1)[0]
            if last != (kind, other):
                last = (kind, other)
                on_wait(
                    Waiting(
                        request_id=self.request_id,
                        seq=0,
                        ts=time.time(),
                        lock=scope,
                        holder=other,
                        queued=kind == "queued",
                    )
                )
            await anyio.sleep(cfg.executor.lock_poll_ms / 1000)

    async def renew(self) -> bool:
        """Extend the held lock; False if it is no longer ours (someone else holds it,
        or our entry was adopted)."""
        if not self.held:
            return True
        f = self._fence
        ok = await self._scripts.renew(
            keys=[f.stream, *self.held_keys],
            args=[*f.args(self._config.groups.executors), self.value, self.ttl_ms],
        )
        return bool(ok)

    async def release(self) -> None:
        """Free the lock (only if still ours) and leave the waiters' queue."""
        self.held = False
        await redis_call(
            lambda: self._scripts.release(keys=self._keys, args=[self.value, self._member])
        )


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
