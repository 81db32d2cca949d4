"""Show events to a person or a program: NDJSON, a live view, or plain lines.

:class:`Display` renders events from any source (a tail, or the deploy graph's
custom stream); :func:`follow` tails requests to their results through a gateway.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import anyio
import msgspec
from rich.console import Console

from contracts import Event, Result
from deploystream.cli.view import LineRenderer, LiveRenderer, Progress
from deploystream.terminal import clean, clean_event, json_safe
from orchestrator.gateway import JobGateway

_json = msgspec.json.Encoder()


def print_json(obj: object) -> None:
    sys.stdout.buffer.write(json_safe(_json.encode(obj)) + b"\n")
    sys.stdout.flush()


class Display:
    """One display for any number of requests; use as a context manager."""

    def __init__(self, *, json: bool, labels: dict[str, str] | None = None) -> None:
        self.json = json
        self.labels = labels or {}
        self.progress: dict[str, Progress] = {}
        self.console = Console()
        self._live = LiveRenderer(self.console) if not json and self.console.is_terminal else None
        self._lines = LineRenderer(sys.stdout)

    def track(self, request_id: str) -> Progress:
        p = self.progress.get(request_id)
        if p is None:
            p = self.progress[request_id] = Progress(
                request_id, label=self.labels.get(request_id, "")
            )
            if self._live is not None:
                self._live.models[request_id] = p
        return p

    def show(self, event: Event) -> None:
        if not self.json:  # JSON escapes control characters; a terminal must not see them
            event = clean_event(event)
        p = self.track(event.request_id)
        p.apply(event)
        if self.json:
            print_json(event)
        elif self._live is not None:
            self._live.update(p, event)
        else:
            self._lines.update(p, event)

    def record(self, obj: dict[str, Any], text: str) -> None:
        """A line that is not an event (post-deploy outcomes): JSON or text."""
        if self.json:
            print_json(obj)
        else:
            self.console.print(clean(text), highlight=False, soft_wrap=True, markup=False)

    def __enter__(self) -> Display:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)


async def tail_into(
    gateway: JobGateway, display: Display, request_ids: list[str]
) -> dict[str, Result]:
    """Tail every request concurrently into an open ``display`` until each has its result."""
    results: dict[str, Result] = {}

    async def one(rid: str) -> None:
        display.track(rid)
        async for _, event in gateway.events(rid):
            display.show(event)
            if isinstance(event, Result):
                results[rid] = event

    async with anyio.create_task_group() as tg:
        for rid in request_ids:
            tg.start_soon(one, rid)
    return results


async def follow(
    gateway: JobGateway, display: Display, request_ids: list[str]
) -> dict[str, Result]:
    """Open ``display`` and tail the requests into it."""
    with display:
        return await tail_into(gateway, display, request_ids)
