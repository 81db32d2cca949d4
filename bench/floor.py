"""The floor: the same round trip in bare redis-py, with nothing on top.

Client: ``XADD`` the job, then ``XREAD BLOCK`` the job's own result stream.
Consumer (a separate process, like an executor): ``XREADGROUP`` a batch, then
``XADD`` each result + ``XACK`` in one MULTI per batch. No signature, no decoding,
no events, no lease: what Redis and redis-py cost for this protocol, and no more.

``python -m bench.floor URL`` runs the consumer until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

JOBS = "floor.jobs"
GROUP = "floor"


def result_key(job_id: bytes | str) -> str:
    jid = job_id.decode() if isinstance(job_id, bytes) else job_id
    return f"floor.res:{{{jid}}}"


async def consume(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        await r.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    streams: dict[Any, Any] = {JOBS: ">"}
    with anyio.open_signal_receiver(signal.SIGTERM) as sigs:
        async with anyio.create_task_group() as tg:

            async def stop() -> None:
                async for _ in sigs:
                    tg.cancel_scope.cancel()

            tg.start_soon(stop)
            while True:
                reply = await r.xreadgroup(GROUP, "c1", streams, count=512, block=1000)
                for _, entries in reply or []:
                    pipe = r.pipeline(transaction=True)
                    for entry_id, fields in entries:
                        pipe.xadd(result_key(fields[b"id"]), {"type": "result", "ok": 1})
                        pipe.xack(JOBS, GROUP, entry_id)
                    await pipe.execute()
    await r.aclose()


async def round_trip(r: aioredis.Redis, job_id: str, payload: bytes) -> None:
    await r.xadd(JOBS, {"id": job_id, "job": payload})
    key = result_key(job_id)
    while True:
        reply = await r.xread({key: "0"}, block=5000, count=10)
        if reply:
            return


if __name__ == "__main__":
    anyio.run(consume, sys.argv[1])
