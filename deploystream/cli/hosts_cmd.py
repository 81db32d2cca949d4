"""``deployctl hosts add``: record the SSH host keys executors will check hosts against."""

from __future__ import annotations

from pathlib import Path

import click

from contracts.rules import RuleError, check_host
from deploystream.cli.app import App
from deploystream.cli.params import HOST_SPEC
from deploystream.errors import BadInputError
from deploystream.known_hosts import ENV_KNOWN_HOSTS, add, default_known_hosts

KNOWN_HOSTS_OPT = click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=ENV_KNOWN_HOSTS,
    show_envvar=True,
    help="Known-hosts file (OpenSSH format). [default: ~/.ssh/known_hosts]",
)


@click.group()
def hosts() -> None:
    """SSH hosts: the host keys executors verify (strictly) before running anything."""


@hosts.command("add")
@click.argument(
    "host_specs", metavar="[USER@]HOST[:PORT]...", nargs=-1, required=True, type=HOST_SPEC
)
@KNOWN_HOSTS_OPT
@click.option(
    "--timeout",
    "timeout_s",
    type=click.IntRange(1, 60),
    default=5,
    envvar="DEPLOYSTREAM_KEYSCAN_TIMEOUT",
    show_envvar=True,
    help="Seconds per host.",
)
@click.pass_obj
def add_hosts(
    app: App,
    host_specs: tuple[tuple[str, int, str | None], ...],
    known_hosts: Path | None,
    timeout_s: int,
) -> int:
    """Fetch each host's keys (as ssh-keyscan does), record them, print their fingerprints.

    Check the fingerprints against the server's own (ssh-keygen -l on it): this is
    the moment trust is given. A host recorded with another key is refused, never
    replaced.
    """
    path = known_hosts or default_known_hosts()
    for host, _port, _user in host_specs:  # all checked before any is contacted
        try:
            check_host(host, "HOST")
        except RuleError as exc:
            raise BadInputError(f"{exc}; nothing recorded") from exc
    for host, port, _user in host_specs:
        added = add(path, host, port, timeout_s)
        state = "added" if added.new else "already known"
        for fp in added.fingerprints:
            click.echo(f"{added.name} {state}: {fp}")
    click.echo(f"known hosts: {path}", err=True)
    return 0
