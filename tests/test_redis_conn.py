"""The asyncio client from ``redis_conn.connect`` packs commands with hiredis and
sends every argument type the code uses exactly as redis-py's own packer would."""

from __future__ import annotations

import anyio
import redis
from redis.asyncio.connection import Connection

from deploystream.redis_conn import connect, hiredis_packing

ARGS: list[tuple[str, object]] = [
    ("text", "déploiement ✓"),
    ("bytes", b"\x00\xffraw"),
    ("int", 42),
    ("negative", -7),
    ("float", 1.5),
    ("big", b"x" * 100_000),  # above redis-py's 6,000-byte buffer cutoff
]


def test_packing_matches_redis_py_byte_for_byte() -> None:
    fast = hiredis_packing(Connection)()
    plain = Connection()
    assert type(fast) is not Connection and isinstance(fast, Connection)
    for _, value in ARGS:
        command = ("EVALSHA", "f" * 40, 1, "ansible.events:{r}", value, "tail")
        assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))


def test_values_round_trip_through_redis(redis_url: str, rclient: redis.Redis) -> None:
    async def write() -> str:
        client = connect(redis_url)
        try:
            for name, value in ARGS:
                await client.set(f"t:{name}", value)  # type: ignore[arg-type]
            await client.xadd("t:stream", {"data": "é", "seq": 3})
            return type(client.connection_pool.get_available_connection()).__name__
        finally:
            await client.aclose()

    assert anyio.run(write) == "HiredisConnection"
    for name, value in ARGS:
        expected = value.encode() if isinstance(value, str) else value
        if isinstance(value, int | float):
            expected = repr(value).encode()
        assert rclient.get(f"t:{name}") == expected, name
    [(_, fields)] = rclient.xrange("t:stream")
    assert fields == {b"data": "é".encode(), b"seq": b"3"}
