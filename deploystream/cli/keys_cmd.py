"""``deployctl keys init``: create the key pairs."""

from __future__ import annotations

from pathlib import Path

import click

from deploystream.cli.app import App
from deploystream.keys import init_keys


@click.group()
def keys() -> None:
    """Key material: executor box pair, orchestrator signing pair."""


@keys.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create the keys (default: --keys-dir).",
)
@click.pass_obj
def init(app: App, directory: Path | None) -> int:
    """Create missing key pairs. Copy only the .pub files to other machines."""
    target = directory or app.keys_dir
    created = init_keys(target)
    for path in created:
        click.echo(f"created {path}")
    if not created:
        click.echo(f"keys already present in {target}")
    return 0
