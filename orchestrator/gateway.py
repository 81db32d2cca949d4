"""The seam between the graph and the job streams.

``DeployerNode`` depends on this protocol, not on redis: the real implementation is
:class:`orchestrator.client.StreamClient`; tests may pass any object with this shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from contracts import Event, Job


class JobGateway(Protocol):
    async def submit(self, job: Job) -> str:
        """Put the job on its stream (idempotent on ``idempotency_key``); return the request id."""
        ...

    def events(self, request_id: str, after: str = "0") -> AsyncIterator[tuple[str, Event]]:
        """Yield ``(entry_id, event)`` from ``after`` until the terminal ``result`` (inclusive).

        Blocks for new events (no polling); resumes after reconnects from the last id;
        raises ``StreamGapError`` on a hole in ``seq``.
        """
        ...

    async def redis_time(self) -> float:
        """The time on Redis's clock (seconds): the clock every machine shares."""
        ...

    async def cancel(self, request_id: str, reason: str = "") -> bool:
        """Ask executors to cancel; False when the request already has a result."""
        ...
