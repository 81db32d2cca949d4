"""The client loop every peer script shares: W workers, N jobs, one JSON line out.

Runs under the peers venv (stdlib only here), imported by the peer scripts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable


async def drive(
    one: Callable[[], Awaitable[None]], *, n: int, warmup: int, window: int
) -> dict[str, float]:
    async def run(count: int) -> float:
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        return time.perf_counter() - t0

    await run(warmup)
    elapsed = await run(n)
    return {"jobs": n, "seconds": round(elapsed, 4), "jobs_per_s": round(n / elapsed, 1)}


def emit(result: dict[str, object]) -> None:
    print(json.dumps(result), flush=True)
