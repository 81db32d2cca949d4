"""Error hierarchy. Lower-layer errors (redis, nacl, OS) are translated at the edges.

DeploystreamError
├── InfrastructureError      Redis (or another service) unreachable -> exit 3
├── BadInputError            operator input rejected before anything is sent -> exit 2
│   └── FieldError           ... in one named field of a job (the CLI names its option)
├── KeyMaterialError         missing / unreadable / wrong keys
└── StreamGapError           a reader found events missing: a hole in ``seq``, fewer
    │                        events than the result's ``event_count``, no ``submitted``
    └── StreamVanishedError  the request's stream is gone (expired or evicted) before
                             its result
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class DeploystreamError(Exception):
    """Base of every error this project raises on purpose."""


class InfrastructureError(DeploystreamError):
    """A service the command needs (Redis) cannot be reached."""


class BadInputError(DeploystreamError):
    """Input rejected before anything was submitted."""


class FieldError(BadInputError):
    """One field of a job is not allowed; ``field`` is its path (``target.host``)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class KeyMaterialError(DeploystreamError):
    """Keys are missing, unreadable, or do not match."""


class StreamGapError(DeploystreamError):
    """A reader found events of a request missing (``deployctl`` exits 3)."""


class StreamVanishedError(StreamGapError):
    """The stream a reader follows no longer exists (its TTL ran out, or Redis evicted it)."""


@contextlib.contextmanager
def unwrapped(kind: type[BaseException]) -> Iterator[None]:
    """Re-raise a ``kind`` error out of a task group's exception group as itself, so
    the CLI's edge shows it as one line (e.g. a missing consumer group, exit 3)."""
    try:
        yield
    except* kind as group:
        raise group.exceptions[0] from None
