"""taskiq-redis no-op round trip: kiq -> worker runs a no-op -> client has the result.

``python taskiq_roundtrip.py URL N WINDOW`` starts one taskiq worker process
(``taskiq worker --workers 1``) on the Redis *stream* broker with the Redis result
backend, and drives N jobs with WINDOW in flight.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from _driver import drive, emit
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POLL = 0.005

broker = RedisStreamBroker(URL, xread_block=1000).with_result_backend(
    RedisAsyncResultBackend(URL, result_ex_time=600)
)


@broker.task(task_name="bench_noop")  # the same name in the client (__main__) and worker
async def noop() -> None:
    return None


async def client_main(n: int, window: int) -> None:
    await broker.startup()

    async def one() -> None:
        task = await noop.kiq()
        await task.wait_result(check_interval=POLL, timeout=60)

    out = await drive(one, n=n, warmup=min(200, n), window=window)
    emit({"peer": "taskiq-redis", **out, "poll_interval_s": POLL})
    await broker.shutdown()


def _wait_for_group(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """The stream broker's group starts at '$': a job sent before it exists is lost."""
    import redis

    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("taskiq worker exited")
            try:
                if r.xinfo_groups("taskiq"):
                    time.sleep(0.5)  # its reader is up a moment after the group
                    return
            except redis.ResponseError:
                pass
            time.sleep(0.1)
    finally:
        r.close()
    raise RuntimeError("taskiq worker did not create its consumer group")


def main() -> None:
    url, n, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, BENCH_REDIS_URL=url, PYTHONPATH=here)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "taskiq_roundtrip:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(window),
            "--no-configure-logging",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("BENCH_PEER_LOG", os.devnull), "ab"),  # noqa: SIM115
        cwd=here,
        env=env,
    )
    try:
        _wait_for_group(url, proc)
        asyncio.run(client_main(n, window))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
