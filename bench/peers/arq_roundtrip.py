"""arq no-op round trip: enqueue -> worker runs a no-op -> client has the result.

``python arq_roundtrip.py URL N WINDOW`` starts one arq worker process (tuned:
poll_delay 5 ms, max_jobs = window) and drives N jobs with WINDOW in flight.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from _driver import drive, emit
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

POLL = 0.005


async def noop(ctx: dict[str, Any]) -> None:
    return None


def worker_main(url: str, max_jobs: int) -> None:
    w = Worker(
        functions=[noop],  # type: ignore[list-item]
        redis_settings=RedisSettings.from_dsn(url),
        max_jobs=max_jobs,
        poll_delay=POLL,
        handle_signals=True,
        keep_result=600,
    )
    w.run()


async def client_main(url: str, n: int, window: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(url))

    async def one() -> None:
        job = await pool.enqueue_job("noop")
        assert job is not None
        await job.result(timeout=60, poll_delay=POLL)

    out = await drive(one, n=n, warmup=min(200, n), window=window)
    emit({"peer": "arq", **out, "poll_delay_s": POLL})
    await pool.aclose()


def main() -> None:
    if sys.argv[1] == "worker":
        worker_main(sys.argv[2], int(sys.argv[3]))
        return
    url, n, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    proc = subprocess.Popen(
        [sys.executable, __file__, "worker", url, str(window)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=os.path.dirname(__file__),
    )
    try:
        time.sleep(1.0)
        asyncio.run(client_main(url, n, window))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
