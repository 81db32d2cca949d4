"""``deployctl`` entrypoint: global options, settings built once, errors -> exit codes.

Exit codes: 0 success; 1 the job failed, timed out or was cancelled; 2 bad input
(nothing submitted); 3 infrastructure: Redis unreachable or refusing (out of memory,
ACL), or a request's events missing (trimmed, expired or evicted).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from redis.exceptions import NoPermissionError, RedisError

from contracts import ConfigError, load_config, with_overrides
from deploystream import logs
from deploystream.cli.app import EXIT_BAD_INPUT, EXIT_INFRA, EXIT_OK, App
from deploystream.cli.interrupt import EXIT_INTERRUPTED
from deploystream.cli.params import REDIS_URL, one_line
from deploystream.errors import (
    BadInputError,
    InfrastructureError,
    KeyMaterialError,
    StreamGapError,
)
from deploystream.keys import default_keys_dir
from deploystream.redis_conn import TRANSIENT
from deploystream.redis_errors import describe
from deploystream.terminal import clean

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="deploystream", prog_name="deployctl")
@click.option(
    "--redis-url",
    type=REDIS_URL,
    envvar="REDIS_URL",
    show_envvar=True,
    help="Redis to use (default: [redis] url of the config).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DEPLOYSTREAM_CONFIG",
    show_envvar=True,
    help="streams.toml to use instead of the packaged one.",
)
@click.option(
    "--keys-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEPLOYSTREAM_KEYS_DIR",
    show_envvar=True,
    help="Key directory (created on first use on a single machine).",
)
@click.option(
    "--log-level",
    default=None,
    envvar="DEPLOYSTREAM_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level (default: info for executor and orchestrator, error otherwise).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    redis_url: str | None,
    config_path: Path | None,
    keys_dir: Path | None,
    log_level: str | None,
) -> None:
    """deploystream: Ansible deployments and provisioning over Redis Streams."""
    # Services log their work (info); one-shot commands only say what went wrong.
    service = ctx.invoked_subcommand in ("executor", "orchestrator")
    logs.configure(log_level or ("info" if service else "error"))
    try:
        config = with_overrides(load_config(config_path), redis_url=redis_url)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    ctx.obj = App(config=config, keys_dir=keys_dir or default_keys_dir())


def _register() -> None:
    from deploystream.cli import (
        demo,
        executor_cmd,
        hosts_cmd,
        jobs,
        keys_cmd,
        ops,
        orchestrator_cmd,
        setup_cmd,
    )

    cli.add_command(executor_cmd.executor)
    cli.add_command(orchestrator_cmd.orchestrator)
    for command in (jobs.deploy, jobs.provision, jobs.tail, jobs.cancel, jobs.retry):
        cli.add_command(command)
    cli.add_command(keys_cmd.keys)
    cli.add_command(hosts_cmd.hosts)
    cli.add_command(ops.status)
    cli.add_command(ops.dlq)
    cli.add_command(demo.demo)
    cli.add_command(setup_cmd.setup_redis)


_register()


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one error: task groups wrap."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _error(message: str) -> None:
    # Messages may quote what others wrote (a key id, a service's output): no controls.
    click.echo(clean(f"error: {one_line(message)}"), err=True)


def _quiet_stdout() -> None:
    """After a closed pipe (``| head``): no second error when Python flushes stdout."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="deployctl", standalone_mode=False)
    except BaseException as raised:  # translated below, or raised again
        return _exit_code(raised)
    return int(rv or 0)


def _exit_code(raised: BaseException) -> int:
    """Errors become one line on stderr and an exit code (DESIGN.md "CLI"), never a
    traceback: 2 bad input, 3 infrastructure, 130 interrupted, 0 for a closed pipe."""
    exc = _leaf(raised)
    match exc:
        case click.exceptions.Exit():
            return int(exc.exit_code)
        case click.exceptions.NoArgsIsHelpError():  # `deployctl` alone: the help, as is
            exc.show()
            return EXIT_BAD_INPUT
        case click.UsageError():
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _error(exc.format_message() + hint)
            return EXIT_BAD_INPUT
        case click.ClickException():
            _error(exc.format_message())
            return int(exc.exit_code)
        case click.Abort() | KeyboardInterrupt():
            click.echo("interrupted", err=True)
            return EXIT_INTERRUPTED
        case BrokenPipeError():
            _quiet_stdout()
            return EXIT_OK
        case BadInputError() | KeyMaterialError():
            _error(str(exc))
            return EXIT_BAD_INPUT
        case InfrastructureError():
            _error(str(exc))
            return EXIT_INFRA
        case NoPermissionError():
            _error(f"Redis refused a command for this user (ACL): {exc}")
            return EXIT_INFRA
        case _ if isinstance(exc, TRANSIENT):
            _error(f"lost the connection to Redis: {exc}")
            return EXIT_INFRA
        case StreamGapError():
            _error(f"events are missing: {exc}")
            return EXIT_INFRA
        case RedisError():  # e.g. out of memory: a one-shot command does not wait
            _error(describe(exc))
            return EXIT_INFRA
    raise raised


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
