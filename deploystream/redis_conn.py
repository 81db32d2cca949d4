"""Redis connections: one pool per process, built from a URL (redis://, rediss://, ACL user)."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from deploystream.errors import InfrastructureError

Redis: TypeAlias = "aioredis.Redis"

# Errors that mean "Redis is not there right now" (retry with backoff), not "bad request".
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """A client whose replies stay bytes; decoding belongs to ``contracts``."""
    return aioredis.Redis.from_url(
        url,
        max_connections=max_connections,
        health_check_interval=15,
        socket_keepalive=True,
        socket_connect_timeout=5,
        retry_on_timeout=False,
    )


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"


async def ping(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()  # type: ignore[misc]
    except TRANSIENT as exc:
        raise InfrastructureError(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
