"""Events: everything that happens to a request, in order, on its own stream.

A tagged union on ``type``. Every event carries ``request_id``, ``seq`` (1, 2, 3 …
per attempt, gap-free; ``submitted`` is written by the orchestrator with seq 0),
``attempt`` and ``ts`` (when it was produced). ``ansible_event`` keeps the
ansible-runner / AWX event name of translated events. ``result`` is the only
terminal event. ``unverified`` is never written to a stream: a reader puts it in
place of an entry whose signature does not check (see :mod:`deploystream.proofs`).
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from contracts.jobs import Job

HostStatus = Literal["ok", "changed", "failed", "skipped", "unreachable"]
# A host's part in a whole run (``not_run``: a stopped rollout never reached it).
HostOutcome = Literal["ok", "changed", "failed", "unreachable", "skipped", "not_run"]
ResultStatus = Literal["success", "failed", "timeout", "canceled", "error", "rejected"]
TERMINAL_FAILURES: frozenset[str] = frozenset(
    {"failed", "timeout", "canceled", "error", "rejected"}
)


class _EventBase(Struct, kw_only=True, tag_field="type"):
    request_id: str
    seq: int
    ts: float
    attempt: int = 1
    ansible_event: str | None = None


class Submitted(_EventBase, tag="submitted"):
    job: Job
    stream: str = ""
    # The job entry's signature and key id, as on the job stream: ``retry`` re-signs
    # a job only after verifying them (anyone who may write events can write this).
    job_sig: str = ""
    job_kid: str = ""


class Accepted(_EventBase, tag="accepted"):
    executor: str
    delivery_count: int = 1
    kind: str = ""


class Reclaimed(_EventBase, tag="reclaimed"):
    executor: str
    previous_owner: str
    delivery_count: int


class PlaybookStarted(_EventBase, tag="playbook_started"):
    playbook: str
    play: str | None = None


class TaskStarted(_EventBase, tag="task_started"):
    task: str
    play: str | None = None
    host: str | None = None


class HostResult(_EventBase, tag="host_result"):
    host: str
    task: str
    status: HostStatus
    duration_ms: int = 0
    msg: str = ""
    ignore_errors: bool = False
    # True for one item of a loop; the task's overall result follows as item=False.
    item: bool = False
    # A failed task's last lines of stdout and stderr (redacted, bounded): kept even
    # when ansible-runner dropped the task's result for its size.
    stdout_tail: str | None = None
    stderr_tail: str | None = None


class Output(_EventBase, tag="output"):
    lines: list[str]


class Waiting(_EventBase, tag="waiting"):
    """Accepted but not started: another job holds the lock it needs (a deploy of the
    same project to the same host, a provision of the same server). ``lock`` says
    what it waits for, ``holder`` the request it waits on (``queued``: an earlier
    waiter, not the running job). Its playbook starts when the lock is free; the wait
    counts against neither its timeout nor its lease. Sent again when the request it
    waits on changes."""

    lock: str
    holder: str | None = None
    queued: bool = False


class EventsCapped(_EventBase, tag="events_capped"):
    """This attempt reached ``retention.request-max-events``: nothing more is published
    but its result (which counts what was dropped, ``events_dropped``)."""

    limit: int


class CancelRequested(_EventBase, tag="cancel_requested"):
    by: str
    reason: str = ""


class HostStats(Struct, kw_only=True, frozen=True):
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    rescued: int = 0
    ignored: int = 0


class HostSummary(Struct, kw_only=True, frozen=True):
    """One host's part in a run, as AWX's job host summaries: its status, why it
    failed (first line), and where its service answers (deploys that reached it)."""

    status: HostOutcome
    msg: str = ""
    url: str | None = None


class Result(_EventBase, tag="result"):
    status: ResultStatus
    stats: dict[str, HostStats] = {}
    deployed_url: str | None = None
    rc: int | None = None
    error: str | None = None
    duration_ms: int = 0
    # Events of this attempt including this one: a reader proves completeness.
    event_count: int = 0
    executor: str | None = None
    failed_hosts: list[str] = []
    failed_task: str | None = None
    # Every host of the run (inventory order); new in v2: absent in older results.
    hosts: dict[str, HostSummary] = {}
    # Events of this attempt not published past request-max-events (see EventsCapped).
    events_dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def failed_at(self) -> str:
        """Where it failed, for a summary: "at task 'X' on h1, h2" (or "")."""
        task = f"at task {self.failed_task!r}" if self.failed_task else ""
        hosts = f"on {', '.join(self.failed_hosts)}" if self.failed_hosts else ""
        return " ".join(p for p in (task, hosts) if p)


class Unverified(_EventBase, tag="unverified"):
    """A reader's note: the entry ``entry_id`` (claiming to be ``claimed``) failed
    verification and was ignored. Shown to the operator, never acted upon."""

    entry_id: str
    claimed: str = ""
    reason: str = ""


Event = (
    Submitted
    | Accepted
    | Reclaimed
    | PlaybookStarted
    | TaskStarted
    | HostResult
    | Output
    | Waiting
    | EventsCapped
    | CancelRequested
    | Result
    | Unverified
)
