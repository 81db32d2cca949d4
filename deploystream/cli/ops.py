"""Operator commands: status, dead letters."""

from __future__ import annotations

import click

from deploystream.cli.app import App


@click.command()
@click.option("--json", "json_out", is_flag=True)
@click.option("--watch", is_flag=True)
@click.pass_obj
def status(app: App, json_out: bool, watch: bool) -> int:
    """Streams, consumer group, executors, dead letters."""
    raise click.ClickException("status: not implemented yet")


@click.group()
def dlq() -> None:
    """Dead-letter streams."""


@dlq.command("list")
@click.option("--json", "json_out", is_flag=True)
@click.pass_obj
def dlq_list(app: App, json_out: bool) -> int:
    """List dead-lettered entries with their reasons."""
    raise click.ClickException("dlq list: not implemented yet")
