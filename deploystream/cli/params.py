"""Click parameter types: ``K=V`` pairs, Redis URLs. Bad input exits 2 via click."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

import click

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
        if not _KEY.match(key):
            self.fail(f"{value!r} is not K=V with K a valid name", param, ctx)
        if not sep:
            if not self.from_env:
                self.fail(f"{value!r} is not K=V", param, ctx)
            if key not in os.environ:
                self.fail(f"{key!r}: no '=' and no environment variable {key} to read", param, ctx)
            val = os.environ[key]
        return (key, val)


class RedisUrl(click.ParamType[str, Any]):
    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        parts = urlsplit(str(value))
        schemes = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            self.fail(
                f"{value!r} is not a redis://, rediss://, unix:// or redis+cluster:// URL",
                param,
                ctx,
            )
        return str(value)


class HttpUrl(click.ParamType[str, Any]):
    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(f"{value!r} is not an http(s) URL", param, ctx)
        return str(value).rstrip("/")


KEY_VALUE = KeyValue()
SECRET_VALUE = KeyValue(from_env=True)
REDIS_URL = RedisUrl()
HTTP_URL = HttpUrl()


def pairs(values: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(values)
