"""Runner event -> contract event translation (pure) and redaction."""

from __future__ import annotations

from typing import Any

from contracts import HostResult, HostStats, Output, PlaybookStarted, TaskStarted
from deploystream.redact import Redactor
from executor.translate import host_stats, host_summaries, stats_artifacts, translate

SECRET = "s3cr3t-Value-42"
redact = Redactor([SECRET])


def tr(raw: dict[str, Any]) -> Any:
    return translate(raw, request_id="r", attempt=2, ts=5.0, redact=redact)


def test_task_start_and_host_results() -> None:
    ev = tr({"event": "playbook_on_task_start", "event_data": {"task": "Fetch", "play": "all"}})
    assert isinstance(ev, TaskStarted) and ev.task == "Fetch" and ev.play == "all"
    assert ev.ansible_event == "playbook_on_task_start" and ev.attempt == 2 and ev.ts == 5.0

    ok = tr(
        {
            "event": "runner_on_ok",
            "event_data": {
                "host": "h1",
                "task": "T",
                "duration": 0.25,
                "res": {"changed": True, "msg": "done"},
            },
        }
    )
    assert isinstance(ok, HostResult)
    assert (ok.status, ok.host, ok.duration_ms, ok.msg, ok.item) == (
        "changed",
        "h1",
        250,
        "done",
        False,
    )
    failed = tr(
        {
            "event": "runner_on_failed",
            "event_data": {
                "host": "h1",
                "task": "T",
                "ignore_errors": True,
                "res": {"msg": "boom " + SECRET},
            },
        }
    )
    assert failed.status == "failed" and failed.ignore_errors
    assert SECRET not in failed.msg and "***" in failed.msg
    unreachable = tr(
        {
            "event": "runner_on_unreachable",
            "event_data": {"host": "h2", "task": "T", "res": {"msg": "ssh: no route"}},
        }
    )
    assert unreachable.status == "unreachable"


def test_items_are_marked_and_labelled() -> None:
    ev = tr(
        {
            "event": "runner_item_on_ok",
            "event_data": {"host": "h", "task": "Loop", "res": {"item": "a", "changed": False}},
        }
    )
    assert isinstance(ev, HostResult) and ev.item and ev.task == "Loop (a)" and ev.status == "ok"


def test_no_log_results_stay_censored() -> None:
    ev = tr(
        {
            "event": "runner_on_ok",
            "event_data": {
                "host": "h",
                "task": "Write env",
                "res": {
                    "censored": "the output has been hidden due to the fact that 'no_log: true'"
                    " was specified for this result",
                    "changed": True,
                },
            },
        }
    )
    assert "hidden" in ev.msg


def test_output_events_are_redacted_and_truncated() -> None:
    long_line = "x" * 10_000
    ev = translate(
        {"event": "warning", "stdout": f"[WARNING]: {SECRET}\n{long_line}\n"},
        request_id="r",
        attempt=1,
        ts=0.0,
        redact=redact,
        line_max=100,
    )
    assert isinstance(ev, Output)
    assert ev.lines[0] == "[WARNING]: ***"
    assert len(ev.lines[1]) == 100


def test_ignored_events_return_none() -> None:
    assert tr({"event": "runner_on_start", "event_data": {}}) is None
    assert tr({"event": "playbook_on_include", "event_data": {}}) is None


def test_playbook_and_play_start() -> None:
    ev = tr({"event": "playbook_on_play_start", "event_data": {"play": "Deploy", "playbook": "p"}})
    assert isinstance(ev, PlaybookStarted) and ev.play == "Deploy"


def test_stats_and_artifacts() -> None:
    raw = {
        "event": "playbook_on_stats",
        "event_data": {
            "ok": {"h1": 3, "h2": 1},
            "changed": {"h1": 2},
            "failures": {"h2": 1},
            "dark": {},
            "skipped": {},
            "artifact_data": {"deployed_url": "http://h1:8000"},
        },
    }
    stats = host_stats(raw)
    assert stats["h1"].ok == 3 and stats["h1"].changed == 2 and stats["h2"].failed == 1
    assert stats_artifacts(raw) == {"deployed_url": "http://h1:8000"}


def test_redactor_masks_token_shapes_and_encodings() -> None:
    import base64
    from urllib.parse import quote

    r = Redactor(["p@ss word!"])
    text = (
        "token ghp_"
        + "A" * 36
        + " url https://user:hunter2@host/x "
        + quote("p@ss word!", safe="")
        + " "
        + base64.b64encode(b"p@ss word!").decode()
        + " -----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    )
    out = r(text)
    for leaked in ("ghp_", "hunter2", "p%40ss", "BEGIN OPENSSH", "cEBzcyB3b3JkIQ=="):
        assert leaked not in out


def test_host_summaries_say_each_hosts_part_in_the_run() -> None:
    stats = {
        "a": HostStats(ok=3, changed=1),
        "b": HostStats(ok=1),
        "c": HostStats(ok=1, failed=1),
        "d": HostStats(unreachable=1),
        "e": HostStats(skipped=2),
        "k": HostStats(unreachable=1),
    }
    out = host_summaries(
        ["a", "b", "c", "d", "e", "k", "n"],
        stats,
        {"c": "boom", "d": "no route"},
        {"k": "host key for k changed"},
        lambda h: f"http://{h}:80",
    )
    assert {h: s.status for h, s in out.items()} == {
        "a": "changed", "b": "ok", "c": "failed", "d": "unreachable", "e": "skipped",
        "k": "failed", "n": "not_run",
    }  # fmt: skip
    assert out["a"].url == "http://a:80" and out["c"].url is None and out["c"].msg == "boom"
    assert out["k"].msg == "host key for k changed" and out["n"].msg == ""
