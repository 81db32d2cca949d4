"""Click parameter types: ``K=V`` pairs, Redis URLs. Bad input exits 2 via click."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import click

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class KeyValue(click.ParamType[tuple[str, str], Any]):
    name = "K=V"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not _KEY.match(key):
            self.fail(f"{value!r} is not K=V with K a valid name", param, ctx)
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
REDIS_URL = RedisUrl()
HTTP_URL = HttpUrl()


def pairs(values: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(values)
