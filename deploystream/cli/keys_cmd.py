"""``deployctl keys init``: create the key pairs."""

from __future__ import annotations

from pathlib import Path

import click

from deploystream.cli.app import App
from deploystream.keys import (
    BOX_PRIVATE,
    BOX_PUBLIC,
    EXEC_SIGN_PRIVATE,
    EXEC_SIGN_PUBLIC,
    SIGN_PRIVATE,
    SIGN_PUBLIC,
    init_keys,
)

_ROLE = {
    BOX_PRIVATE: "private, 0600: executors only",
    BOX_PUBLIC: "public: orchestrators (and the platform) seal secrets to it",
    SIGN_PRIVATE: "private, 0600: orchestrators only",
    SIGN_PUBLIC: "public: executors verify jobs and cancels with it",
    EXEC_SIGN_PRIVATE: "private, 0600: executors only (signs events, results, dead letters)",
    EXEC_SIGN_PUBLIC: "public: orchestrators and readers (tail, status, dlq) verify with it",
}


@click.group()
def keys() -> None:
    """Key material: executor box pair, orchestrator and executor signing pairs."""


@keys.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create the keys (default: --keys-dir).",
)
@click.pass_obj
def init(app: App, directory: Path | None) -> int:
    """Create missing key pairs (idempotent).

    One machine: nothing else to do. Several machines: executors get executor.key +
    executor-sign.key + orchestrator.pub, orchestrators get orchestrator.key +
    executor.pub + executor-sign.pub; a private half never leaves its side. A pair
    whose public half alone is present (copied from elsewhere) is kept, not replaced.
    """
    target = directory or app.keys_dir
    created = init_keys(target)
    for path in created:
        click.echo(f"created {path} ({_ROLE.get(path.name, '')})")
    if not created:
        click.echo(f"keys already present in {target}")
    return 0
