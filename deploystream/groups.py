"""Consumer groups: created once by an admin step, only used by the services.

The executor's and orchestrator's Redis users may not create consumer groups (a
stolen executor password could otherwise add a group of its own to
``ansible.deploy`` and read every job). ``deployctl setup-redis``, run with admin
credentials (compose's ``redis-setup`` service, the demo, the test harness), creates
them; a service works against them (:func:`ensure_groups`) and says what to run when
one is missing.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from contracts import StreamsConfig
from deploystream.errors import InfrastructureError

SETUP_HINT = "run `deployctl setup-redis` with an admin REDIS_URL"


def all_groups(config: StreamsConfig) -> list[tuple[str, str]]:
    """(stream, group) of every consumer group deploystream reads through."""
    out = [(stream, config.groups.executors) for stream in config.job_streams]
    out.append((config.streams.requests, config.groups.orchestrators))
    return out


async def create_groups(redis: Redis, config: StreamsConfig) -> list[str]:
    """Create every missing group (and its stream); return what was created."""
    created = []
    for stream, group in all_groups(config):
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            created.append(f"{stream} {group}")
    return created


async def missing_groups(redis: Redis, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Those of ``pairs`` whose stream or group does not exist (``XINFO GROUPS``)."""
    missing = []
    for stream, group in pairs:
        try:
            groups = await redis.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            groups = []
        names = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"] for g in groups}
        if group not in names:
            missing.append((stream, group))
    return missing


async def ensure_groups(redis: Redis, pairs: list[tuple[str, str]]) -> None:
    """Work against existing groups. Where this Redis user may create a missing one
    (a Redis without ACL users), it does; else :class:`InfrastructureError` says what
    to run."""
    for stream, group in await missing_groups(redis, pairs):
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except NoPermissionError as exc:
            raise InfrastructureError(
                f"consumer group {group!r} of {stream!r} does not exist and this "
                f"Redis user may not create it: {SETUP_HINT}"
            ) from exc
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
