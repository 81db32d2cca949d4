"""The state of one request as a person follows it: events in, state out.

Pure: no I/O and no clock (time comes from the events, or is passed in), so every
renderer draws the same state and the tests drive it with plain event lists.

Counting follows Ansible's play recap, so the live numbers never jump when the
recap arrives: a ``changed`` result is also ``ok``; a failure with
``ignore_errors`` is ``ok`` and ``ignored``; loop items are not counted, their
task's overall result is.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath

from contracts import (
    Accepted,
    CancelRequested,
    Event,
    EventsCapped,
    HostResult,
    PlaybookStarted,
    Reclaimed,
    Result,
    Submitted,
    TaskStarted,
    Unverified,
    Waiting,
    job_kind,
)

# The recap columns, in Ansible's order of interest to an operator.
COUNTED = ("ok", "changed", "failed", "unreachable", "skipped")
# A task's status is the worst of its hosts'.
_SEVERITY = ("running", "done", "skipped", "ignored", "ok", "changed", "unreachable", "failed")


@dataclass
class TaskNode:
    """One task of a play: what each host made of it."""

    name: str
    started: float
    hosts: dict[str, str] = field(default_factory=dict)  # host -> ok|changed|failed|…|ignored
    messages: dict[str, str] = field(default_factory=dict)  # host -> why it failed
    items: Counter[str] = field(default_factory=Counter)  # loop item statuses
    ended: float | None = None

    @property
    def status(self) -> str:
        if not self.hosts:
            return "running" if self.ended is None else "done"
        return max(self.hosts.values(), key=_SEVERITY.index)

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)


@dataclass
class PlayNode:
    name: str
    tasks: list[TaskNode] = field(default_factory=list)


@dataclass
class Progress:
    request_id: str
    label: str = ""
    # When the request began: the first event's time (``submitted`` on a replay);
    # ``created`` stands in until an event arrives.
    started: float | None = None
    created: float = field(default_factory=time.time)
    executor: str | None = None
    kind: str | None = None
    playbook: str | None = None
    attempt: int = 1
    accepted_at: float | None = None
    plays: list[PlayNode] = field(default_factory=list)
    hosts: dict[str, Counter[str]] = field(default_factory=dict)
    result: Result | None = None
    notes: list[str] = field(default_factory=list)
    # What it waits for before its playbook starts (a ``waiting`` event), in words.
    waiting: str | None = None

    # ------------------------------------------------------------------ applying
    def apply(self, event: Event) -> None:
        if isinstance(event, Unverified):  # shown, never believed: nothing else changes
            self.notes.append(f"unverified {event.claimed or 'event'} ignored: {event.reason}")
            return
        if self.started is None:
            self.started = event.ts
        if event.attempt > self.attempt and not isinstance(event, (Submitted, Result)):
            # A new attempt (adopted after its executor died): start the tree over.
            self._restart(event.attempt)
        match event:
            case Submitted(job=job):
                self.playbook = job.playbook
                self.kind = job_kind(job)
            case Accepted(executor=name, kind=kind):
                self.executor = name
                self.kind = kind or self.kind
                self.accepted_at = event.ts
            case Waiting():
                self.waiting = describe_wait(event)
            case Reclaimed(previous_owner=prev, executor=name):
                self.waiting = None
                self.notes.append(f"adopted by {name} after {prev} stopped answering")
                self.executor = name
                self._restart(event.attempt)
            case PlaybookStarted(playbook=pb, play=play):
                self.waiting = None
                self.playbook = self.playbook or PurePath(pb).stem or None
                if play:
                    self.plays.append(PlayNode(play))
            case TaskStarted(task=task, play=play):
                self.waiting = None
                self._task_started(task, play, event.ts)
            case HostResult():
                self._host_result(event)
            case EventsCapped(limit=limit):
                self.notes.append(
                    f"event limit reached ({limit}, retention.request-max-events): "
                    "the rest of this run is not shown; its result follows"
                )
            case CancelRequested(by=who, reason=reason):
                self.notes.append(f"cancel requested by {who}" + (f": {reason}" if reason else ""))
            case Result():
                self.waiting = None
                self.result = event
                self.executor = event.executor or self.executor
                current = self.current_task
                if current is not None and current.ended is None:
                    current.ended = event.ts
            case _:
                pass

    def _restart(self, attempt: int) -> None:
        self.attempt = attempt
        self.plays.clear()
        self.hosts.clear()

    def _task_started(self, name: str, play: str | None, ts: float) -> None:
        current = self.current_task
        if current is not None and current.ended is None:
            current.ended = ts
        if not self.plays or (play and self.plays[-1].name != play):
            self.plays.append(PlayNode(play or ""))
        self.plays[-1].tasks.append(TaskNode(name, started=ts))

    def _host_result(self, ev: HostResult) -> None:
        task = self.current_task
        if task is None or not (ev.task == task.name or ev.task.startswith(task.name + " (")):
            # A result for a task we never saw start (a replay cut short): show it anyway.
            self._task_started(ev.task.split(" (")[0] if ev.item else ev.task, None, ev.ts)
            task = self.plays[-1].tasks[-1]
        if ev.item:
            task.items[ev.status] += 1
            return
        status = "ignored" if ev.status == "failed" and ev.ignore_errors else ev.status
        task.hosts[ev.host] = status
        if status in ("failed", "unreachable", "ignored") and ev.msg:
            task.messages[ev.host] = ev.msg
        task.ended = max(task.ended or ev.ts, ev.ts)
        counts = self.hosts.setdefault(ev.host, Counter())
        if status in ("changed", "ignored"):
            counts["ok"] += 1  # as Ansible's recap counts them
        counts[status] += 1

    # ------------------------------------------------------------------ reading
    @property
    def tasks(self) -> list[TaskNode]:
        return [t for play in self.plays for t in play.tasks]

    @property
    def current_task(self) -> TaskNode | None:
        for play in reversed(self.plays):
            if play.tasks:
                return play.tasks[-1]
        return None

    @property
    def task(self) -> str | None:
        """The name of the task running now (or that ran last)."""
        current = self.current_task
        return current.name if current else None

    @property
    def tasks_done(self) -> int:
        return sum(1 for t in self.tasks if t.hosts)

    @property
    def phase(self) -> str:
        """queued | waiting | running | the result status."""
        if self.result is not None:
            return self.result.status
        if self.waiting:
            return "waiting"
        return "running" if self.executor else "queued"

    def elapsed_at(self, now: float) -> float:
        start = self.started if self.started is not None else self.created
        end = self.result.ts if self.result is not None else now
        return max(0.0, end - start)

    @property
    def elapsed(self) -> float:
        return self.elapsed_at(time.time())

    def totals(self) -> Counter[str]:
        """Recap counts over all hosts: the result's (authoritative) once it is in."""
        total: Counter[str] = Counter({k: 0 for k in COUNTED})
        if self.result is not None and self.result.stats:
            for s in self.result.stats.values():
                total.update(
                    ok=s.ok,
                    changed=s.changed,
                    failed=s.failed,
                    unreachable=s.unreachable,
                    skipped=s.skipped,
                )
            return total
        # A live view reads from its refresh thread while events are applied: iterate
        # snapshots (list()/dict() copy in one step under the GIL), never live dicts.
        for counts in list(self.hosts.values()):
            total.update({k: v for k, v in dict(counts).items() if k in COUNTED})
        return total

    def host_totals(self) -> dict[str, Counter[str]]:
        """Per-host recap counts: the result's once it is in, else counted live."""
        if self.result is not None and self.result.stats:
            return {
                host: Counter(
                    ok=s.ok,
                    changed=s.changed,
                    failed=s.failed,
                    unreachable=s.unreachable,
                    skipped=s.skipped,
                )
                for host, s in self.result.stats.items()
            }
        return {
            host: Counter({k: c.get(k, 0) for k in COUNTED}) for host, c in list(self.hosts.items())
        }


def describe_wait(event: Waiting) -> str:
    """What a job waits for, in plain words."""
    if not event.holder:
        return f"waiting for {event.lock}"
    how = "behind the earlier" if event.queued else "held by"
    return f"waiting for {event.lock} ({how} {event.holder})"


def describe_result(result: Result) -> str:
    """The final line, in plain words."""
    secs = result.duration_ms / 1000
    if result.status == "success":
        where = f" — {result.deployed_url}" if result.deployed_url else ""
        return f"succeeded in {secs:.1f} s{where}"
    where = f" {result.failed_at}" if result.failed_at else ""
    reason = f": {result.error}" if result.error else ""
    return f"{result.status} after {secs:.1f} s{where}{reason}"


def describe_hosts(result: Result, counts: dict[str, Counter[str]]) -> list[str]:
    """One line per host of the run (the result's host summaries): status, counts,
    and where it answers or why it did not."""
    lines = []
    for host, summary in result.hosts.items():
        tally = f" [{format_counts(counts[host])}]" if host in counts else ""
        extra = summary.url or summary.msg
        lines.append(f"{host}: {summary.status}{tally}" + (f" — {extra}" if extra else ""))
    return lines


def format_counts(counts: Counter[str]) -> str:
    return " ".join(f"{k}={counts.get(k, 0)}" for k in COUNTED)
