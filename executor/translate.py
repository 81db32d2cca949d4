"""ansible-runner event dict -> contract event. Pure: no I/O, no clock, no seq.

The caller fills ``seq`` (publish order) and passes ``ts``. Event names follow
ansible-runner / AWX (``runner_on_ok`` …) and are kept in ``ansible_event``.
Everything textual goes through the job's redactor; ``no_log`` results arrive
censored from Ansible and stay so.

A failed task keeps the last lines of its stdout and stderr (``TAIL_LINES`` lines,
at most ``TAIL_CHARS`` characters each, redacted) in its ``host_result``. When
ansible-runner dropped the task's result for its size (``MAX_EVENT_RES``: a task
that printed 100,000 lines arrives with ``res == {}``), the result is read back
from the event's display text (``fatal: [host]: FAILED! => {...}``), so the reason
-- ``REAL ERROR: disk full`` on the last line of stderr -- is not lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from contracts.events import (
    Event,
    HostOutcome,
    HostResult,
    HostStats,
    HostSummary,
    Output,
    PlaybookStarted,
    TaskStarted,
)

MSG_MAX = 500
TAIL_LINES = 20
TAIL_CHARS = 2000
_HOST_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
    "runner_item_on_ok": "ok",
    "runner_item_on_failed": "failed",
    "runner_item_on_skipped": "skipped",
}
_OUTPUT_EVENTS = frozenset(
    {"verbose", "warning", "error", "deprecated", "debug", "system_warning", "playbook_on_stats",
     "playbook_on_no_hosts_matched", "playbook_on_no_hosts_remaining"}
)  # fmt: skip
_STAT_FIELDS = ("ok", "changed", "failures", "skipped", "dark", "rescued", "ignored")


def _short(text: str, limit: int = MSG_MAX) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(res: Mapping[str, Any]) -> str:
    if res.get("censored"):
        return str(res["censored"])
    for key in ("msg", "stderr", "reason", "stdout"):
        value = res.get(key)
        if value:
            text = str(value)
            stderr = str(res.get("stderr") or "").strip()
            if key == "msg" and text == "non-zero return code" and stderr:
                # A command's own words say why; Ansible's only say that it failed.
                text = f"{text}: {stderr.splitlines()[-1]}"
            return text
    return ""


def failure_line(raw: Mapping[str, Any], limit: int = 300) -> str:
    """The first non-empty line of a failed result's message: the *why* of a failure
    summary (``task 'Fetch repository' failed on h: <git's error>``). Not redacted."""
    res: Mapping[str, Any] = (raw.get("event_data") or {}).get("res") or recovered_result(raw)
    for line in _message(res).splitlines():
        if line.strip():
            return _short(line, limit)
    return ""


def recovered_result(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The task result from a failure's display text (``... FAILED! => {json}``),
    for when ansible-runner dropped ``res`` for its size; ``{}`` if unreadable."""
    text = str(raw.get("stdout") or "")
    start = text.find("=> {")
    if start < 0:
        return {}
    try:
        res, _ = json.JSONDecoder().raw_decode(text, start + 3)
    except ValueError:
        return {}
    return res if isinstance(res, dict) else {}


def _tail(value: Any, redact: Callable[[str], str]) -> str | None:
    """The last lines of a task's stdout or stderr, redacted, bounded."""
    if not value:
        return None
    text = value if isinstance(value, str) else "\n".join(str(v) for v in value)
    lines = text.rstrip().splitlines()[-TAIL_LINES:]
    # Redact whole lines before cutting: a cut could halve a secret and hide it.
    tail = redact("\n".join(lines))
    return tail if len(tail) <= TAIL_CHARS else "…" + tail[-(TAIL_CHARS - 1) :]


def _item_label(res: Mapping[str, Any], redact: Callable[[str], str]) -> str | None:
    if "item" not in res:
        return None
    label = res.get("_ansible_item_label", res["item"])
    return _short(redact(str(label)), 100)


def translate(
    raw: Mapping[str, Any],
    *,
    request_id: str,
    attempt: int,
    ts: float,
    redact: Callable[[str], str],
    line_max: int = 4096,
) -> Event | None:
    """One runner event -> one contract event, or None for events users don't need."""
    name = str(raw.get("event", ""))
    data: Mapping[str, Any] = raw.get("event_data") or {}
    common: dict[str, Any] = {
        "request_id": request_id, "seq": 0, "ts": ts, "attempt": attempt, "ansible_event": name,
    }  # fmt: skip
    if name in _HOST_EVENTS:
        res: Mapping[str, Any] = data.get("res") or {}
        status = _HOST_EVENTS[name]
        failed = status in ("failed", "unreachable")
        if failed and not res:  # dropped by ansible-runner for its size
            res = recovered_result(raw)
        if status == "ok" and res.get("changed"):
            status = "changed"
        task = redact(str(data.get("task", "")))
        item = _item_label(res, redact) if name.startswith("runner_item") else None
        if item is not None:
            task = f"{task} ({item})"
        duration = data.get("duration")
        return HostResult(
            **common,
            host=str(data.get("host", "")),
            task=task,
            status=status,  # type: ignore[arg-type]
            duration_ms=int(float(duration) * 1000) if duration else 0,
            msg=_short(redact(_message(res))),  # redact first: a cut can halve a secret
            ignore_errors=bool(data.get("ignore_errors")),
            item=item is not None,
            stdout_tail=_tail(res.get("stdout") or res.get("module_stdout"), redact)
            if failed
            else None,
            stderr_tail=_tail(res.get("stderr") or res.get("module_stderr"), redact)
            if failed
            else None,
        )
    if name in ("playbook_on_task_start", "playbook_on_handler_task_start"):
        return TaskStarted(
            **common,
            task=redact(str(data.get("task") or data.get("name") or "")),
            play=redact(str(data.get("play", ""))) or None,
        )
    if name == "playbook_on_start":
        return PlaybookStarted(**common, playbook=str(data.get("playbook", "")))
    if name == "playbook_on_play_start":
        return PlaybookStarted(
            **common,
            playbook=str(data.get("playbook", "")),
            play=redact(str(data.get("play") or data.get("name") or "")),
        )
    if name in _OUTPUT_EVENTS:
        stdout = str(raw.get("stdout") or "")
        lines = [_short(redact(line), line_max) for line in stdout.splitlines() if line.strip()]
        return Output(**common, lines=lines) if lines else None
    return None


def host_stats(raw: Mapping[str, Any]) -> dict[str, HostStats]:
    """Per-host recap from a ``playbook_on_stats`` event."""
    data: Mapping[str, Any] = raw.get("event_data") or {}
    hosts: set[str] = set()
    for field in _STAT_FIELDS:
        hosts.update((data.get(field) or {}).keys())

    def get(field: str, host: str) -> int:
        return int((data.get(field) or {}).get(host, 0))

    return {
        host: HostStats(
            ok=get("ok", host),
            changed=get("changed", host),
            failed=get("failures", host),
            skipped=get("skipped", host),
            unreachable=get("dark", host),
            rescued=get("rescued", host),
            ignored=get("ignored", host),
        )
        for host in sorted(hosts)
    }


def stats_artifacts(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Values a playbook published with ``set_stats`` (e.g. ``deployed_url``)."""
    data: Mapping[str, Any] = raw.get("event_data") or {}
    artifacts = data.get("artifact_data") or {}
    return dict(artifacts) if isinstance(artifacts, Mapping) else {}


def host_summaries(
    scope: list[str],
    stats: Mapping[str, HostStats],
    whys: Mapping[str, str],
    refused: Mapping[str, str],
    url_of: Callable[[str], str | None],
) -> dict[str, HostSummary]:
    """Each host's part in the run, from the play's stats (AWX's host summaries):
    refused (host key) -> failed; no stats -> not_run (a stopped rollout)."""
    out: dict[str, HostSummary] = {}
    for host in scope:
        st = stats.get(host)
        status: HostOutcome
        if host in refused:
            out[host] = HostSummary(status="failed", msg=refused[host])
            continue
        if st is None:
            status = "not_run"
        elif st.unreachable:
            status = "unreachable"
        elif st.failed:
            status = "failed"
        elif st.changed:
            status = "changed"
        elif st.ok:
            status = "ok"
        else:
            status = "skipped"
        url = url_of(host) if status in ("ok", "changed") else None
        out[host] = HostSummary(status=status, msg=whys.get(host, ""), url=url)
    return out
