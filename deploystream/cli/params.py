"""Click parameter types: ``K=V`` pairs, Redis URLs, request and entry ids.

Bad input exits 2 via click, with the offending value cut to a readable length.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

import click

from contracts.jobs import parse_host_spec
from contracts.rules import shown
from deploystream.redis_conn import redact_url

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A request id as contracts.jobs.RequestId has it; the CLI prints 8-character prefixes.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_ENTRY_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?\Z")
_LONG_WORD = re.compile(r"\S{201,}")  # longer than any URL or path worth reading


def one_line(message: str, limit: int = 400) -> str:
    """A message as one readable line: no newlines, no endless words, bounded length."""
    text = " ".join(message.split())
    text = _LONG_WORD.sub(lambda m: m.group(0)[:120] + f"…({len(m.group(0))} chars)", text)
    return text if len(text) <= limit else text[:limit] + "…"


class KeyValue(click.ParamType[tuple[str, str], Any]):
    name = "K=V"

    def __init__(self, *, from_env: bool = False) -> None:
        # ``--secret NAME`` takes the value from the environment variable NAME, so a
        # secret need not appear in this process's argv (visible in ``ps``).
        self.from_env = from_env
        if from_env:
            self.name = "K=V|NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        # Never echo a secret's value: only its name part.
        echo = shown(key) if self.from_env else shown(value)
        if not _KEY.match(key):
            self.fail(f"{echo} is not K=V with K a name (letters, digits, '_')", param, ctx)
        if not sep:
            if not self.from_env:
                self.fail(f"{echo} is not K=V", param, ctx)
            if key not in os.environ:
                self.fail(f"{echo}: no '=' and no environment variable {key} to read", param, ctx)
            val = os.environ[key]
        elif self.from_env:
            warn_inline(f"--secret {key}=...", f"--secret {key} with {key} set in the environment")
        return (key, val)


def warn_inline(given: str, instead: str) -> None:
    """A secret given on the command line is in this process's argv, which other
    local users can read (``ps``): say so, and what to do instead."""
    click.echo(
        f"warning: {given} puts a secret in this command's argv, visible to other local "
        f"users; prefer {instead}",
        err=True,
    )


class RedisUrl(click.ParamType[str, Any]):
    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        url = str(value)
        parts = urlsplit(url)
        value = redact_url(url)  # echoed below: never with its password
        schemes = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            self.fail(
                f"{shown(value)} is not a redis://, rediss://, unix:// or redis+cluster:// URL",
                param,
                ctx,
            )
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number 0-65535)
        except ValueError:
            self.fail(f"{shown(value)}: the port must be a number from 1 to 65535", param, ctx)
        db = parts.path.strip("/")
        if parts.scheme != "unix" and db and not db.isdigit():
            self.fail(f"{shown(value)}: the database (after '/') must be a number", param, ctx)
        return url


class HttpUrl(click.ParamType[str, Any]):
    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            parts = urlsplit(str(value))
            host = parts.hostname
            parts.port  # noqa: B018
        except ValueError:
            host = None
        if parts.scheme not in ("http", "https") or not host:
            self.fail(f"{shown(value)} is not an http(s) URL", param, ctx)
        return str(value).rstrip("/")


class RequestIdType(click.ParamType[str, Any]):
    """A request id, or a prefix of one (at least 8 characters, resolved against Redis)."""

    name = "REQUEST_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not _REQUEST_ID.match(str(value)):
            self.fail(
                f"{shown(value)} is not a request id (up to 128 letters, digits, '_', '.', '-')",
                param,
                ctx,
            )
        return str(value)


class EntryIdType(click.ParamType[str, Any]):
    """A stream entry id as ``dlq list`` prints it (``1700000000000-0``)."""

    name = "ENTRY_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not _ENTRY_ID.match(str(value)):
            self.fail(
                f"{shown(value)} is not a stream entry id (MILLISECONDS-SEQ, as 'dlq list' shows)",
                param,
                ctx,
            )
        return str(value)


class HostSpec(click.ParamType[tuple[str, int, str | None], Any]):
    """``[USER@]HOST[:PORT]`` (IPv6: ``[ADDR]:PORT``) -> ``(host, port, user)``; the
    host and user themselves are checked where the job is built (the message names
    the field's rule in words)."""

    name = "[USER@]HOST[:PORT]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_host_spec(str(value))
        except ValueError:
            self.fail(f"{shown(value)} is not [USER@]HOST[:PORT] (port 1-65535)", param, ctx)


KEY_VALUE = KeyValue()
SECRET_VALUE = KeyValue(from_env=True)
REDIS_URL = RedisUrl()
HTTP_URL = HttpUrl()
REQUEST_ID = RequestIdType()
ENTRY_ID = EntryIdType()
HOST_SPEC = HostSpec()


def pairs(values: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(values)
