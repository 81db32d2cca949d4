"""Redis connections: one pool per process, built from a URL (redis://, rediss://, ACL user).

- ACL users: ``redis://USER:PASSWORD@host:port/db`` (``deploy/redis/users.acl``
  declares least-privilege ``orchestrator`` and ``executor`` users). Pass the URL
  through ``REDIS_URL`` (the environment), not ``--redis-url``: a command line is
  visible to every user of the machine.
- TLS: ``rediss://``; the server certificate is always verified (hostname too).
  A private CA is given by ``DEPLOYSTREAM_REDIS_CA`` (a PEM file); a client
  certificate for ``tls-auth-clients yes`` by ``DEPLOYSTREAM_REDIS_CERT`` and
  ``DEPLOYSTREAM_REDIS_KEY``. Setting any of these with a plain ``redis://`` URL is
  an error, not a silent downgrade.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from deploystream.errors import BadInputError, InfrastructureError

Redis: TypeAlias = "aioredis.Redis"

# Errors that mean "Redis is not there right now" (retry with backoff), not "bad request".
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

_HIREDIS_SERIALIZER = HiredisRespSerializer()

ENV_CA = "DEPLOYSTREAM_REDIS_CA"
ENV_CERT = "DEPLOYSTREAM_REDIS_CERT"
ENV_KEY = "DEPLOYSTREAM_REDIS_KEY"


@dataclass(frozen=True)
class TlsOptions:
    """Files for ``rediss://``: a CA bundle, and a client certificate + key (mTLS)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsOptions:
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        return cls(ca_file=path(ENV_CA), cert_file=path(ENV_CERT), key_file=path(ENV_KEY))

    @property
    def configured(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def connection_kwargs(self) -> dict[str, Any]:
        for label, file in (
            (ENV_CA, self.ca_file),
            (ENV_CERT, self.cert_file),
            (ENV_KEY, self.key_file),
        ):
            if file is not None and not file.is_file():
                raise BadInputError(f"{label}: {file} is not a readable file")
        if (self.cert_file is None) != (self.key_file is None):
            raise BadInputError(f"{ENV_CERT} and {ENV_KEY} go together")
        kwargs: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if self.ca_file is not None:
            kwargs["ssl_ca_certs"] = str(self.ca_file)
        if self.cert_file is not None and self.key_file is not None:
            kwargs["ssl_certfile"] = str(self.cert_file)
            kwargs["ssl_keyfile"] = str(self.key_file)
        return kwargs


def connect(
    url: str, *, max_connections: int = 64, tls: TlsOptions | None = None
) -> aioredis.Redis:
    """A client whose replies stay bytes; decoding belongs to ``contracts``."""
    from typing import cast

    from deploystream.cluster import connect_cluster, is_cluster_url

    if is_cluster_url(url):  # Redis Cluster (one hash slot): see deploystream/cluster.py
        return cast("aioredis.Redis", connect_cluster(url, max_connections=max_connections))
    extra: dict[str, Any] = {}
    if urlsplit(url).scheme == "rediss":
        extra = (tls or TlsOptions()).connection_kwargs()
    elif tls is not None and tls.configured:
        raise BadInputError(
            f"TLS files are set ({ENV_CA}/{ENV_CERT}/{ENV_KEY}) but the Redis URL "
            f"{redact_url(url)} is not rediss://"
        )
    client = aioredis.Redis.from_url(
        url,
        max_connections=max_connections,
        health_check_interval=15,
        socket_keepalive=True,
        socket_connect_timeout=5,
        retry_on_timeout=False,
        # No CLIENT SETINFO on connect: a least-privilege ACL user may not run it, and
        # each refusal would add an entry to the server's ACL LOG.
        driver_info=None,
        **extra,
    )
    pool = client.connection_pool  # no connection is made before the first command
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


_PACKING: dict[type[Any], type[Any]] = {}


def hiredis_packing(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` packing commands with hiredis (C) instead of Python.

    redis-py's synchronous client packs with hiredis when it is installed; its asyncio
    client always packs in Python, re-joining the whole buffer for every argument.
    For our scripts, whose arguments carry whole jobs and events, that was the
    largest single cost in the dispatch profile (``pack_command``: ~19 % of the
    executor's CPU). The packer used is redis-py's own ``HiredisRespSerializer``.
    """
    if not HIREDIS_AVAILABLE:
        return connection_class
    if connection_class not in _PACKING:

        def pack_command(self: Any, *args: Any) -> list[bytes]:
            packed: list[bytes] = _HIREDIS_SERIALIZER.pack(*args)
            return packed

        _PACKING[connection_class] = type(
            f"Hiredis{connection_class.__name__}",
            (connection_class,),
            {"pack_command": pack_command, "__module__": __name__},
        )
    return _PACKING[connection_class]


def redact_url(url: str) -> str:
    """The URL without its password (userinfo or ``?password=``), for messages."""
    url = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"


async def ping(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()  # type: ignore[misc]
    except TRANSIENT as exc:
        raise InfrastructureError(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
