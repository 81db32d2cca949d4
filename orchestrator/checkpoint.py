"""The graph's checkpointer: SQLite by default, Postgres when a DSN is configured.

Checkpoints hold the deploy state (sealed job, request id, last event id), never a
plaintext secret; the SQLite file is still created 0600 in a 0700 directory because
it names hosts and projects. ``langgraph-checkpoint-postgres`` is optional and only
imported when a DSN asks for it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from orchestrator.errors import CheckpointConfigError
from orchestrator.settings import OrchestratorSettings

log = structlog.get_logger(__name__)

POSTGRES_PACKAGE = "langgraph-checkpoint-postgres"


@asynccontextmanager
async def open_checkpointer(
    settings: OrchestratorSettings | None = None,
    *,
    db_path: Path | None = None,
    dsn: str | None = None,
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """``async with open_checkpointer(settings) as saver:`` (explicit args win over settings)."""
    dsn = dsn or (settings.checkpoint_dsn if settings else None)
    if dsn:
        async with _postgres(dsn) as saver:
            yield saver
        return
    path = db_path or (settings.checkpoint_db if settings else None)
    if path is None:
        raise CheckpointConfigError("no checkpoint database path or DSN configured")
    _prepare_file(path)
    log.debug("checkpoint.sqlite", path=str(path))
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver


def _prepare_file(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    except OSError as exc:
        raise CheckpointConfigError(
            f"cannot open checkpoint database {path}: {exc.strerror}"
        ) from exc


@asynccontextmanager
async def _postgres(dsn: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    try:
        module = importlib.import_module("langgraph.checkpoint.postgres.aio")
    except ImportError as exc:
        raise CheckpointConfigError(
            f"a Postgres checkpoint DSN is configured but {POSTGRES_PACKAGE} is not "
            f"installed (install it next to deploystream[orchestrator], or unset the DSN "
            f"to use SQLite)"
        ) from exc
    saver_cls: Any = module.AsyncPostgresSaver
    async with AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(saver_cls.from_conn_string(dsn))
            await saver.setup()  # idempotent: creates the tables on first use
        except Exception as exc:  # psycopg's errors; the driver is optional, so no import
            raise CheckpointConfigError(
                f"cannot open the Postgres checkpoint database: {type(exc).__name__}"
            ) from exc
        log.debug("checkpoint.postgres")
        yield saver
