"""Run an :class:`Executor` as a process: signals, metrics endpoint, clean exit."""

from __future__ import annotations

import signal

import anyio
import structlog
from redis.asyncio import Redis

from contracts import StreamsConfig
from deploystream.keys import ExecutorKeys
from executor.settings import ExecutorSettings
from executor.worker import Executor

log = structlog.get_logger(__name__)


async def run_executor(
    redis: Redis,
    config: StreamsConfig,
    settings: ExecutorSettings,
    keys: ExecutorKeys,
    *,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    executor = Executor(redis, config, settings, keys)

    async def on_signals() -> None:
        with anyio.open_signal_receiver(*signals) as received:
            async for signum in received:
                log.warning(
                    "executor.signal", signal=signal.Signals(signum).name, executor=settings.name
                )
                executor.stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signals)
        await executor.serve()
        tg.cancel_scope.cancel()
    await redis.aclose()
    return 0
