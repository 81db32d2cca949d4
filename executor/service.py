"""Run an :class:`Executor` as a process: signals, metrics endpoint, clean exit.

The first SIGTERM/SIGINT stops taking work and gives running playbooks the grace
period (``shutdown-grace-s``); a second one ends the grace at once (the runs are
cancelled and their entries given back for adoption). Either way the process
exits 0 once every run has finished or been given back.
"""

from __future__ import annotations

import contextlib
import signal

import anyio
import structlog
from redis.asyncio import Redis

from contracts import StreamsConfig
from deploystream.errors import InfrastructureError, unwrapped
from deploystream.keys import ExecutorKeys
from executor.runner import sweep_stale_run_dirs
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
    from executor.metrics import start_metrics

    metrics = start_metrics(settings.metrics_port, executor=settings.name)
    if metrics.port is not None:
        log.info("executor.metrics", port=metrics.port, executor=settings.name)
    if not settings.can_switch_users:
        log.warning(
            "executor.local_services",
            executor=settings.name,
            isolated=False,
            deploys_to_localhost=(
                "allowed, as this user (--unisolated-local-services)"
                if settings.unisolated_local_services
                else "refused (not root: a service could not run as a user of its own)"
            ),
        )
    swept = sweep_stale_run_dirs(settings.work_dir)
    if swept:
        dirs = [str(d) for d in swept]
        log.warning("executor.swept_stale_runs", executor=settings.name, dirs=dirs)
    executor = Executor(redis, config, settings, keys, metrics=metrics)

    async def on_signals() -> None:
        with anyio.open_signal_receiver(*signals) as received:
            async for signum in received:
                log.warning(
                    "executor.signal",
                    signal=signal.Signals(signum).name,
                    executor=settings.name,
                    again=executor.stopping,
                )
                executor.stop()

    try:
        with unwrapped(InfrastructureError):
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_signals)
                await executor.serve()
                tg.cancel_scope.cancel()
    finally:
        metrics.close()
        with anyio.move_on_after(2), contextlib.suppress(Exception):
            await redis.aclose()
    return 0
