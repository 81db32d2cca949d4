"""``deployctl orchestrator``: run the DevOps graph as a service on ``deploy.requests``."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import anyio
import click

from contracts import with_overrides
from deploystream.cli.app import App
from deploystream.errors import InfrastructureError, unwrapped
from deploystream.redis_policy import require_no_eviction


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    envvar="DEPLOYSTREAM_ORCHESTRATOR_CONCURRENCY",
    show_envvar=True,
    help="Graph runs at once.",
)
@click.option(
    "--name",
    envvar="DEPLOYSTREAM_ORCHESTRATOR_NAME",
    show_envvar=True,
    help="Consumer name (default: hostname-pid).",
)
@click.option(
    "--checkpoint-db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DEPLOYSTREAM_CHECKPOINT_DB",
    show_envvar=True,
    help="SQLite checkpoints (share it, or set DEPLOYSTREAM_CHECKPOINT_DSN, so "
    "another orchestrator can resume a graph).",
)
@click.option(
    "--lease-ms",
    type=click.IntRange(100),
    envvar="DEPLOYSTREAM_LEASE_MS",
    show_envvar=True,
    help="Lease of a running request (default: streams.toml).",
)
@click.pass_obj
def orchestrator(
    app: App, concurrency: int, name: str | None, checkpoint_db: Path | None, lease_ms: int | None
) -> int:
    """Consume deployment requests and run the DevOps graph for each."""
    from orchestrator.service import OrchestratorService
    from orchestrator.settings import OrchestratorSettings

    settings = OrchestratorSettings.from_env()
    if checkpoint_db:
        settings = settings.with_changes(checkpoint_db=checkpoint_db)
    config = with_overrides(app.config, lease_ms=lease_ms)
    keys = app.orchestrator_keys()
    consumer = name or f"{socket.gethostname()}-{os.getpid()}"

    async def main() -> int:
        redis = await app.redis()
        await require_no_eviction(redis, app.redis_url)
        service = OrchestratorService(
            redis, config, keys, settings, name=consumer, concurrency=concurrency
        )

        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for _ in received:
                    service.stop()

        with unwrapped(InfrastructureError):
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_signals)
                await service.serve()
                tg.cancel_scope.cancel()
        await redis.aclose()
        return 0

    return anyio.run(main)
