"""What a person watching a deploy sees: a live view on a terminal, lines otherwise.

:class:`Progress` is the pure model (events in, state out); the renderers only
draw it. Several requests can share one view (the demo runs three at once).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from contracts import (
    Accepted,
    CancelRequested,
    Event,
    HostResult,
    Output,
    PlaybookStarted,
    Reclaimed,
    Result,
    Submitted,
    TaskStarted,
)

_STATUS_STYLE = {
    "ok": "green",
    "changed": "yellow",
    "failed": "bold red",
    "unreachable": "bold red",
    "skipped": "cyan",
    "success": "bold green",
    "timeout": "bold red",
    "canceled": "magenta",
    "error": "bold red",
    "rejected": "bold red",
}
COUNTED = ("ok", "changed", "failed", "unreachable", "skipped")


@dataclass
class Progress:
    request_id: str
    label: str = ""
    started: float = field(default_factory=time.time)
    executor: str | None = None
    playbook: str | None = None
    task: str | None = None
    tasks_done: int = 0
    hosts: dict[str, Counter[str]] = field(default_factory=dict)
    result: Result | None = None
    notes: list[str] = field(default_factory=list)

    def apply(self, event: Event) -> None:
        match event:
            case Submitted(job=job):
                self.playbook = job.playbook
            case Accepted(executor=name):
                self.executor = name
            case Reclaimed(previous_owner=prev, executor=name):
                self.notes.append(f"adopted by {name} after {prev} stopped answering")
                self.hosts.clear()
            case PlaybookStarted(playbook=pb):
                self.playbook = self.playbook or pb
            case TaskStarted(task=task):
                if self.task is not None:
                    self.tasks_done += 1
                self.task = task
            case HostResult(host=host, status=status, item=False):
                self.hosts.setdefault(host, Counter())[status] += 1
            case CancelRequested(by=who):
                self.notes.append(f"cancel requested by {who}")
            case Result():
                self.result = event
            case _:
                pass

    @property
    def elapsed(self) -> float:
        end = self.result.ts if self.result else time.time()
        return max(0.0, end - self.started)

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        if self.result is not None and self.result.stats:
            # The play recap is authoritative once the run is over.
            for s in self.result.stats.values():
                total.update(
                    ok=s.ok,
                    changed=s.changed,
                    failed=s.failed,
                    unreachable=s.unreachable,
                    skipped=s.skipped,
                )
            return total
        for counts in self.hosts.values():
            total.update(counts)
        return total


def describe_result(result: Result) -> str:
    """The final line, in plain words."""
    secs = result.duration_ms / 1000
    if result.status == "success":
        where = f" — {result.deployed_url}" if result.deployed_url else ""
        return f"succeeded in {secs:.1f} s{where}"
    reason = f": {result.error}" if result.error else ""
    return f"{result.status} after {secs:.1f} s{reason}"


class LineRenderer:
    """Plain text, one line per step: logs, pipes, CI."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def update(self, progress: Progress, event: Event) -> None:
        prefix = f"[{progress.label or progress.request_id[:8]}]"
        line: str | None = None
        match event:
            case Submitted(job=job):
                line = f"submitted {job.playbook} (request {event.request_id})"
            case Accepted(executor=name, delivery_count=n):
                line = f"accepted by {name}" + (f" (delivery {n})" if n > 1 else "")
            case Reclaimed(previous_owner=prev, executor=name):
                line = f"adopted by {name}: {prev} stopped answering"
            case TaskStarted(task=task):
                line = f"TASK {task}"
            case HostResult(host=host, status=status, msg=msg, item=item, duration_ms=ms):
                detail = f": {msg}" if msg and status in ("failed", "unreachable") else ""
                kind = "  item" if item else " "
                line = f"{kind} {host}: {status} ({ms} ms){detail}"
            case Output(lines=lines) if event.ansible_event != "playbook_on_stats":
                line = "\n".join(f"{prefix}   {ln}" for ln in lines)
                self.out.write(line + "\n")
                self.out.flush()
                return
            case CancelRequested(by=who):
                line = f"cancel requested by {who}"
            case Result():
                totals = progress.totals()
                counts = " ".join(f"{k}={totals.get(k, 0)}" for k in COUNTED)
                line = f"{event.status.upper()} {describe_result(event)} [{counts}]"
            case _:
                return
        self.out.write(f"{prefix} {line}\n")
        self.out.flush()


class LiveRenderer:
    """A rich live view: one panel row per request, refreshed in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.models: dict[str, Progress] = {}
        self.live = Live(
            console=console, refresh_per_second=8, transient=False, get_renderable=self._render
        )

    def __enter__(self) -> LiveRenderer:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.refresh()
        self.live.__exit__(None, None, None)

    def update(self, progress: Progress, event: Event) -> None:
        self.models[progress.request_id] = progress

    def _render(self) -> RenderableType:
        table = Table(expand=False, show_edge=False, pad_edge=False)
        table.add_column("request")
        table.add_column("executor")
        table.add_column("task / status", overflow="fold", max_width=60)
        for name in COUNTED:
            table.add_column(name, justify="right")
        table.add_column("time", justify="right")
        for p in self.models.values():
            totals = p.totals()
            if p.result is None:
                state: RenderableType = Spinner(
                    "dots", text=Text(p.task or "waiting for an executor")
                )
            else:
                state = Text(
                    describe_result(p.result), style=_STATUS_STYLE.get(p.result.status, "")
                )
            table.add_row(
                p.label or p.request_id[:8],
                p.executor or "-",
                state,
                *(
                    Text(str(totals.get(k, 0)), style=_STATUS_STYLE[k] if totals.get(k) else "dim")
                    for k in COUNTED
                ),
                f"{p.elapsed:.1f}s",
            )
        notes = [
            Text(f"{p.label or p.request_id[:8]}: {n}", style="dim")
            for p in self.models.values()
            for n in p.notes[-2:]
        ]
        return Group(table, *notes)
