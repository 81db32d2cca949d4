"""Follow one or more requests to their results: NDJSON, a live view, or lines."""

from __future__ import annotations

import sys
from collections.abc import Callable

import anyio
import msgspec
from rich.console import Console

from contracts import Event, Result
from deploystream.cli.view import LineRenderer, LiveRenderer, Progress
from orchestrator.gateway import JobGateway

_json = msgspec.json.Encoder()


def print_json(obj: object) -> None:
    sys.stdout.buffer.write(_json.encode(obj) + b"\n")
    sys.stdout.flush()


class Follower:
    """Tails requests concurrently and feeds one renderer."""

    def __init__(self, gateway: JobGateway, *, json: bool, labels: dict[str, str] | None = None):
        self.gateway = gateway
        self.json = json
        self.labels = labels or {}
        self.progress: dict[str, Progress] = {}
        self.console = Console(stderr=False)

    async def follow(
        self, request_ids: list[str], on_event: Callable[[str, Event], None] | None = None
    ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        if self.json:
            render: Callable[[Progress, Event], None] = lambda p, e: print_json(e)  # noqa: E731
            live = None
        elif self.console.is_terminal:
            live = LiveRenderer(self.console)
            render = live.update
        else:
            live = None
            render = LineRenderer(sys.stdout).update

        async def one(rid: str) -> None:
            p = self.progress.setdefault(rid, Progress(rid, label=self.labels.get(rid, "")))
            async for _, event in self.gateway.events(rid):
                p.apply(event)
                render(p, event)
                if on_event:
                    on_event(rid, event)
                if isinstance(event, Result):
                    results[rid] = event

        if live is not None:
            with live:
                for rid in request_ids:
                    live.models[rid] = self.progress.setdefault(
                        rid, Progress(rid, label=self.labels.get(rid, ""))
                    )
                async with anyio.create_task_group() as tg:
                    for rid in request_ids:
                        tg.start_soon(one, rid)
        else:
            async with anyio.create_task_group() as tg:
                for rid in request_ids:
                    tg.start_soon(one, rid)
        return results
