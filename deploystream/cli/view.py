"""What a person watching a deploy sees: a live view on a terminal, lines otherwise.

:class:`~deploystream.cli.progress.Progress` is the pure model (events in, state
out); the renderers here only draw it. Several requests share one view (the demo
runs three at once):

- :class:`LiveRenderer` (rich, a terminal): per request a header with a spinner,
  executor, playbook, elapsed time and the recap counts, then the play/task tree
  with each host's status; the task running now spins. While running, each request
  gets its share of the screen (the most recent tasks); the final frame shows
  every task.
- :class:`LineRenderer` (a pipe, a log, CI): one plain line per step, no colour.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text
from rich.tree import Tree

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
    Unverified,
    Waiting,
)
from deploystream.cli.progress import (
    COUNTED,
    PlayNode,
    Progress,
    TaskNode,
    describe_hosts,
    describe_result,
    describe_wait,
    format_counts,
)

__all__ = ["COUNTED", "LineRenderer", "LiveRenderer", "Progress", "describe_result"]

STYLE = {
    "ok": "green",
    "changed": "yellow",
    "failed": "bold red",
    "unreachable": "bold red",
    "skipped": "cyan",
    "ignored": "dim red",
    "done": "dim",
    "success": "bold green",
    "timeout": "bold red",
    "canceled": "magenta",
    "error": "bold red",
    "rejected": "bold red",
}
MARK = {
    "ok": "✓",
    "changed": "✓",
    "ignored": "✓",
    "skipped": "↷",
    "done": "·",
    "failed": "✗",
    "unreachable": "✗",
    "success": "✓",
}
SPINNER = "dots"


def _label(p: Progress) -> str:
    return p.label or p.request_id[:8]


def _secs(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes}m{secs:02d}s"


def task_window(
    plays: list[PlayNode], room: int | None
) -> tuple[int, list[tuple[PlayNode, list[TaskNode]]]]:
    """The most recent tasks that fit in ``room`` rows (play headings count, and so
    does one "… N earlier tasks" line): (tasks hidden, [(play, its tasks shown)])."""
    flat = [(play, task) for play in plays for task in play.tasks]
    shown = len(flat)

    def rows(k: int) -> int:
        kept = flat[len(flat) - k :] if k else []
        headings = len({id(play) for play, _ in kept}) or (1 if plays else 0)
        return headings + k + (1 if k < len(flat) else 0)

    if room is not None:
        while shown > 0 and rows(shown) > room:
            shown -= 1
    kept = flat[len(flat) - shown :] if shown else []
    window: list[tuple[PlayNode, list[TaskNode]]] = []
    for play, task in kept:
        if not window or window[-1][0] is not play:
            window.append((play, []))
        window[-1][1].append(task)
    if not window and plays:
        window.append((plays[-1], []))
    return len(flat) - shown, window


class LineRenderer:
    """Plain text, one line per step: logs, pipes, CI."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def update(self, progress: Progress, event: Event) -> None:
        prefix = f"[{_label(progress)}]"
        lines: list[str] = []
        match event:
            case Submitted(job=job):
                lines.append(f"submitted {job.playbook} (request {event.request_id})")
            case Accepted(executor=name, delivery_count=n):
                lines.append(f"accepted by {name}" + (f" (delivery {n})" if n > 1 else ""))
            case Waiting():
                lines.append(describe_wait(event))
            case Reclaimed(previous_owner=prev, executor=name):
                lines.append(f"adopted by {name}: {prev} stopped answering")
            case PlaybookStarted(play=play) if play:
                lines.append(f"PLAY {play}")
            case TaskStarted(task=task):
                lines.append(f"TASK {task}")
            case HostResult(host=host, status=status, msg=msg, item=item, duration_ms=ms):
                shown = "failed (ignored)" if status == "failed" and event.ignore_errors else status
                detail = f": {msg}" if msg and status in ("failed", "unreachable") else ""
                if item:
                    label = event.task.rpartition(" (")[2].rstrip(")") or "?"
                    lines.append(f"    item {label}: {host} {shown}{detail}")
                else:
                    lines.append(f"  {host}: {shown} ({ms} ms){detail}")
            case Output(lines=out) if event.ansible_event != "playbook_on_stats":
                lines += [f"  {ln}" for ln in out]
            case CancelRequested(by=who, reason=reason):
                lines.append(f"cancel requested by {who}" + (f": {reason}" if reason else ""))
            case Unverified(claimed=claimed, reason=why):
                lines.append(f"unverified {claimed or 'event'} ignored ({why})")
            case Result():
                totals = format_counts(progress.totals())
                lines.append(f"{event.status.upper()} {describe_result(event)} [{totals}]")
                hosts = progress.host_totals()
                if event.hosts and (len(event.hosts) > 1 or event.status != "success"):
                    lines += [f"  {line}" for line in describe_hosts(event, hosts)]
                elif len(hosts) > 1 or event.status != "success":
                    lines += [f"  {h}: {format_counts(c)}" for h, c in sorted(hosts.items())]
            case _:
                return
        self.out.write("".join(f"{prefix} {line}\n" for line in lines))
        self.out.flush()


class LiveRenderer:
    """A rich live view of any number of requests, refreshed in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.models: dict[str, Progress] = {}
        self.final = False
        self._spinners: dict[str, Spinner] = {}
        self.live = Live(
            console=console,
            refresh_per_second=8,
            transient=False,
            get_renderable=self.render,
        )

    def __enter__(self) -> LiveRenderer:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        # The last frame stays on screen: show every task, not the running window.
        self.final = True
        self.live.__exit__(None, None, None)

    def update(self, progress: Progress, event: Event) -> None:
        self.models[progress.request_id] = progress

    # ------------------------------------------------------------------ drawing
    def render(self, now: float | None = None) -> RenderableType:
        now = time.time() if now is None else now
        models = list(self.models.values())
        if not models:
            return Text("waiting for events…", style="dim")
        # While live, each request gets an equal share of the screen's rows.
        share = max(4, (self.console.height - 1) // len(models) - 1)
        budget = None if self.final else share
        return Group(*(self.render_request(p, now=now, rows=budget) for p in models))

    def render_request(self, p: Progress, *, now: float, rows: int | None) -> RenderableType:
        tree = Tree(self._header(p, now), guide_style="dim")
        tail: list[RenderableType] = []
        if p.result is not None:
            tail.append(Text(f"{describe_result(p.result)}", style=STYLE.get(p.result.status, "")))
        hosts = p.host_totals()
        if p.result is not None and len(p.result.hosts) > 1:
            for summary, text in zip(
                p.result.hosts.values(), describe_hosts(p.result, hosts), strict=True
            ):
                tail.append(Text(f"  {text}", style=STYLE.get(summary.status, "")))
        elif len(hosts) > 1:
            tail.append(self._host_line(hosts))
        if p.waiting and p.result is None:
            tail.append(Text(f"⏸ {p.waiting}", style="yellow"))
        tail += [Text(n, style="dim italic") for n in p.notes[-2:]]
        room = None if rows is None else max(1, rows - 1 - len(tail))
        hidden, window = task_window(p.plays, room)
        for i, (play, tasks) in enumerate(window):
            branch = tree.add(Text(f"PLAY {play.name}" if play.name else "PLAY", style="bold"))
            if i == 0 and hidden:
                branch.add(Text(f"… {hidden} earlier tasks", style="dim"))
            for task in tasks:
                branch.add(self._task_row(p, task))
        for line in tail:
            tree.add(line)
        return tree

    def _header(self, p: Progress, now: float) -> RenderableType:
        text = Text()
        text.append(_label(p), style="bold")
        if p.label:
            text.append(f" {p.request_id[:8]}", style="dim")
        if p.playbook:
            text.append(f"  {p.playbook}")
        if p.executor:
            text.append(f" on {p.executor}")
        elif p.result is None:
            text.append("  waiting for an executor", style="italic")
        text.append(f"  {_secs(p.elapsed_at(now))}", style="cyan")
        text.append("  ")
        totals = p.totals()
        for k in COUNTED:
            n = totals.get(k, 0)
            text.append(f"{k}={n}", style=STYLE[k] if n else "dim")
            text.append(" ")
        text.rstrip()
        if p.result is None:
            spinner = self._spinners.setdefault(p.request_id, Spinner(SPINNER))
            spinner.update(text=text)
            return spinner
        status = p.result.status
        mark = MARK.get(status, "✗")
        return Text.assemble((f"{mark} ", STYLE.get(status, "")), text)

    def _task_row(self, p: Progress, task: TaskNode) -> RenderableType:
        running = p.result is None and task is p.current_task
        row = Text()
        row.append(task.name, style="bold" if running else "")
        messages = dict(task.messages)  # snapshots: events arrive while we draw
        for host, status in list(task.hosts.items()):
            row.append("  ")
            row.append(f"{host} ", style="dim")
            row.append(status, style=STYLE.get(status, ""))
            if host in messages and status != "ignored":
                row.append(f": {messages[host]}", style="red")
        if task.items:
            items = ", ".join(f"{n} {s}" for s, n in sorted(dict(task.items).items()))
            row.append(f"  [items: {items}]", style="dim")
        if task.duration is not None and not running:
            row.append(f"  {_secs(task.duration)}", style="dim")
        if running:
            return Text.assemble(("▸ ", "bold yellow"), row)
        status = task.status
        return Text.assemble((f"{MARK.get(status, '·')} ", STYLE.get(status, "")), row)

    @staticmethod
    def _host_line(hosts: dict[str, Counter[str]]) -> Text:
        line = Text("hosts: ", style="dim")
        for i, (host, counts) in enumerate(sorted(hosts.items())):
            if i:
                line.append(" · ", style="dim")
            line.append(f"{host} ")
            line.append(" ".join(f"{k}={n}" for k in COUNTED if (n := counts.get(k, 0))) or "-")
        return line
