"""What a Redis error means for us, decided by its type (never by its message).

redis-py turns an error reply into a typed exception and strips its prefix:
``OOM command not allowed ...`` arrives as :class:`~redis.exceptions.OutOfMemoryError`
whose text starts ``command not allowed``. Matching message prefixes missed it, so
an out-of-memory Redis was treated as a fatal error. Here every error gets one
:data:`Kind`:

- ``connection``  Redis not there right now (dropped, restarting): retry;
- ``loading``     Redis is loading its data set after a restart: retry;
- ``oom``         Redis is at ``maxmemory`` with ``noeviction``: back-pressure, wait
                  until memory is freed and retry (and say so);
- ``busy``        a script is running, the cluster is resharding, a replica is
                  read-only during a failover: retry;
- ``permission``  the ACL user may not do this: fatal, a configuration error;
- ``other``       anything else: fatal (a bug or bad data).
"""

from __future__ import annotations

from typing import Literal

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from deploystream.redis_conn import TRANSIENT

Kind = Literal["connection", "loading", "oom", "busy", "permission", "other"]

# Error replies redis-py leaves as a plain ResponseError: prefixes kept in the text.
_BUSY_PREFIXES = ("BUSY", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "MISCONF", "TRYAGAIN")

_WORDS: dict[Kind, str] = {
    "connection": "Redis is unreachable",
    "loading": "Redis is loading its data",
    "oom": "Redis is out of memory (maxmemory reached; it evicts nothing)",
    "busy": "Redis is busy or failing over",
    "permission": "Redis refused the command for this user (ACL)",
    "other": "Redis returned an error",
}


def kind(exc: BaseException) -> Kind:
    """The kind of a Redis (or socket) error, by type."""
    if isinstance(exc, BusyLoadingError):  # a ConnectionError subclass: check first
        return "loading"
    if isinstance(exc, TRANSIENT):
        return "connection"
    if isinstance(exc, OutOfMemoryError):
        return "oom"
    if isinstance(exc, (ReadOnlyError, ClusterDownError, TryAgainError)):
        return "busy"
    if isinstance(exc, NoPermissionError):
        return "permission"
    if isinstance(exc, ResponseError):
        text = str(exc)
        if text.startswith("OOM"):  # a script's error reply wraps it as plain text
            return "oom"
        if text.startswith(("LOADING",)):
            return "loading"
        if text.startswith(_BUSY_PREFIXES):
            return "busy"
    return "other"


def retryable(exc: BaseException) -> bool:
    """Worth retrying later: Redis away, loading, busy, or out of memory."""
    return kind(exc) in ("connection", "loading", "oom", "busy")


def describe(exc: BaseException) -> str:
    """One line for a person: what kind of trouble, and Redis's own words."""
    return f"{_WORDS[kind(exc)]}: {exc}"
