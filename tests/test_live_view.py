"""The live view: what a person reads, on a terminal and in a pipe.

The model (:class:`Progress`) is pure and driven here with event lists. The
renderers are checked on a recording console. End to end, ``deployctl`` runs in a
pseudo-terminal against a real executor and real Ansible, and a small terminal
emulator replays its output to get the screen a person is left looking at.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from rich.console import Console

from contracts import (
    Accepted,
    CancelRequested,
    Event,
    HostResult,
    HostStats,
    HostSummary,
    Output,
    PlaybookStarted,
    Reclaimed,
    Result,
    StreamsConfig,
    Submitted,
    TaskStarted,
    Waiting,
)
from contracts.jobs import ProvisionJob, Target
from deploystream.cli.progress import Progress
from deploystream.cli.view import LineRenderer, LiveRenderer, task_window
from tests.harness import DEPLOYCTL, Executors, cli_env, deployctl, wait_for_result

ANSIBLE_DIR = Path(__file__).parent / "ansible"
RID = "0f3c2a9d5e6b4c7d8e9fa0b1c2d3e4f5"
SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Events:
    """Builds a request's events with increasing seq and ts."""

    def __init__(self, request_id: str = RID, t0: float = 1000.0) -> None:
        self.rid = request_id
        self.seq = 0
        self.ts = t0

    def __call__(self, cls: type, dt: float = 0.5, **fields: object) -> Event:
        self.ts += dt
        if cls is not Submitted:
            self.seq += 1
        fields.setdefault("attempt", 1)
        return cls(
            request_id=self.rid, seq=self.seq if cls is not Submitted else 0, ts=self.ts, **fields
        )  # type: ignore[no-any-return]


def submitted(ev: Events, playbook: str = "deploy_service") -> Event:
    job = ProvisionJob(
        request_id=ev.rid,
        submitted_at=ev.ts,
        playbook=playbook,
        target=Target(host="localhost"),
        server_handle="s1",
    )
    return ev(Submitted, dt=0, job=job, stream="ansible.provision")


def two_host_run(ev: Events) -> list[Event]:
    return [
        submitted(ev),
        ev(Accepted, executor="ex-a", kind="provision"),
        ev(PlaybookStarted, playbook="/p/deploy_service.yml"),
        ev(PlaybookStarted, playbook="/p/deploy_service.yml", play="Deploy service"),
        ev(TaskStarted, task="Fetch repository", play="Deploy service"),
        ev(HostResult, host="web1", task="Fetch repository", status="changed"),
        ev(HostResult, host="web2", task="Fetch repository", status="ok"),
        ev(TaskStarted, task="Install packages", play="Deploy service"),
        ev(HostResult, host="web1", task="Install packages (git)", status="ok", item=True),
        ev(HostResult, host="web1", task="Install packages (curl)", status="changed", item=True),
        ev(HostResult, host="web1", task="Install packages", status="changed"),
        ev(HostResult, host="web2", task="Install packages", status="skipped"),
        ev(TaskStarted, task="Optional probe", play="Deploy service"),
        ev(HostResult, host="web1", task="Optional probe", status="failed",
           ignore_errors=True, msg="no"),
        ev(HostResult, host="web2", task="Optional probe", status="unreachable",
           msg="ssh: timed out"),
        ev(TaskStarted, task="Wait for health check", play="Deploy service"),
    ]  # fmt: skip


# ---------------------------------------------------------------- the pure model


def test_progress_builds_the_play_task_tree_with_host_statuses() -> None:
    p = Progress(RID)
    for e in two_host_run(Events()):
        p.apply(e)
    assert p.playbook == "deploy_service" and p.kind == "provision" and p.executor == "ex-a"
    assert [pl.name for pl in p.plays] == ["Deploy service"]
    fetch, install, probe, wait = p.tasks
    assert fetch.hosts == {"web1": "changed", "web2": "ok"} and fetch.status == "changed"
    assert install.hosts == {"web1": "changed", "web2": "skipped"}
    assert install.items == {"ok": 1, "changed": 1}
    assert probe.hosts == {"web1": "ignored", "web2": "unreachable"}
    assert probe.status == "unreachable" and probe.messages["web2"] == "ssh: timed out"
    assert p.task == "Wait for health check" and wait.status == "running"
    assert p.current_task is wait and p.tasks_done == 3
    assert fetch.duration == pytest.approx(1.0) and wait.duration is None
    assert p.phase == "running"


def test_counts_follow_the_ansible_recap() -> None:
    """changed is also ok, an ignored failure is ok, items are not counted."""
    p = Progress(RID)
    for e in two_host_run(Events()):
        p.apply(e)
    hosts = p.host_totals()
    assert hosts["web1"] == {"ok": 3, "changed": 2, "failed": 0, "unreachable": 0, "skipped": 0}
    assert hosts["web2"] == {"ok": 1, "changed": 0, "failed": 0, "unreachable": 1, "skipped": 1}
    assert p.totals() == {"ok": 4, "changed": 2, "failed": 0, "unreachable": 1, "skipped": 1}
    # The recap, once in, is authoritative (and here agrees).
    stats = {
        "web1": HostStats(ok=3, changed=2, ignored=1),
        "web2": HostStats(ok=1, unreachable=1, skipped=1),
    }
    p.apply(Result(request_id=RID, seq=99, ts=2000.0, status="failed", stats=stats))
    assert p.totals() == {"ok": 4, "changed": 2, "failed": 0, "unreachable": 1, "skipped": 1}
    assert p.phase == "failed" and p.tasks[-1].status == "done"


def test_elapsed_runs_from_the_first_event_to_the_result() -> None:
    ev = Events(t0=500.0)
    p = Progress(RID, created=0.0)
    assert p.elapsed_at(10.0) == 10.0  # nothing yet: since the view started
    p.apply(submitted(ev))
    p.apply(ev(Accepted, dt=2.0, executor="ex-a"))
    assert p.accepted_at == 502.0
    assert p.elapsed_at(510.0) == 10.0
    p.apply(ev(Result, dt=5.0, status="success", duration_ms=5000))
    assert p.elapsed_at(9999.0) == 7.0


def test_a_new_attempt_starts_the_tree_over() -> None:
    ev = Events()
    p = Progress(RID)
    for e in two_host_run(ev)[:6]:
        p.apply(e)
    assert p.tasks and p.hosts
    p.apply(ev(Reclaimed, attempt=2, executor="ex-b", previous_owner="ex-a", delivery_count=2))
    assert p.executor == "ex-b" and p.attempt == 2 and not p.tasks and not p.hosts
    assert p.notes == ["adopted by ex-b after ex-a stopped answering"]
    # An attempt that begins with `accepted` (same name, restarted) also resets.
    p.apply(ev(TaskStarted, attempt=2, task="Fetch repository"))
    p.apply(ev(Accepted, attempt=3, executor="ex-b", delivery_count=3))
    assert not p.tasks and p.attempt == 3


def test_results_for_unseen_tasks_and_cancel_notes() -> None:
    ev = Events()
    p = Progress(RID)
    p.apply(ev(HostResult, host="h", task="Late (x)", status="ok", item=True))
    p.apply(ev(HostResult, host="h", task="Late", status="ok"))
    assert [t.name for t in p.tasks] == ["Late"] and p.tasks[0].hosts == {"h": "ok"}
    p.apply(ev(CancelRequested, by="alice", reason="wrong ref"))
    assert p.notes == ["cancel requested by alice: wrong ref"]


def test_task_window_keeps_the_latest_tasks_and_their_play() -> None:
    ev = Events()
    p = Progress(RID)
    for play in ("One", "Two"):
        p.apply(ev(PlaybookStarted, playbook="x.yml", play=play))
        for i in range(5):
            p.apply(ev(TaskStarted, task=f"{play} {i}", play=play))
    hidden, window = task_window(p.plays, None)
    assert hidden == 0 and [len(t) for _, t in window] == [5, 5]
    hidden, window = task_window(p.plays, 5)
    # heading + "… earlier" + 3 tasks
    assert hidden == 7 and [pl.name for pl, _ in window] == ["Two"]
    assert [t.name for t in window[0][1]] == ["Two 2", "Two 3", "Two 4"]
    hidden, window = task_window(p.plays, 9)
    assert hidden == 4 and [pl.name for pl, _ in window] == ["One", "Two"]
    assert hidden + sum(len(t) for _, t in window) == 10
    assert task_window([], 3) == (0, [])


# ---------------------------------------------------------------- renderers


def recording_console(height: int = 60) -> Console:
    return Console(
        file=io.StringIO(), width=120, height=height, force_terminal=True, color_system=None
    )


def rendered(renderer: LiveRenderer, now: float) -> str:
    console = recording_console()
    console.print(renderer.render(now=now))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)


def test_live_view_shows_several_requests_with_tree_counts_and_spinner() -> None:
    live = LiveRenderer(recording_console())
    running = Progress(RID, label="deploy web")
    for e in two_host_run(Events(RID, t0=1000.0)):
        running.apply(e)
        live.update(running, e)
    done_ev = Events("b" * 32, t0=1000.0)
    done = Progress("b" * 32, label="provision")
    for e in [
        submitted(done_ev, "provision_server"),
        done_ev(Accepted, executor="ex-b"),
        done_ev(TaskStarted, task="Create user", play="Provision"),
        done_ev(HostResult, host="localhost", task="Create user", status="changed"),
        done_ev(Result, status="success", duration_ms=1500, deployed_url="http://localhost:8001",
                stats={"localhost": HostStats(ok=1, changed=1)}),
    ]:  # fmt: skip
        done.apply(e)
        live.update(done, e)
    queued = Progress("c" * 32, label="deploy api", created=1000.0)
    live.models[queued.request_id] = queued

    text = rendered(live, now=1010.0)
    lines = text.splitlines()
    header = next(ln for ln in lines if "deploy web" in ln)
    assert header[0] in SPINNER_FRAMES
    assert "deploy_service on ex-a" in header and "10.0s" in header
    assert "ok=4 changed=2 failed=0 unreachable=1 skipped=1" in header
    assert "PLAY Deploy service" in text
    row = next(ln for ln in lines if "Fetch repository" in ln)
    assert "✓" in row and "web1 changed" in row and "web2 ok" in row
    row = next(ln for ln in lines if "Optional probe" in ln)
    assert "✗" in row and "web1 ignored" in row and "web2 unreachable: ssh: timed out" in row
    assert "[items: 1 changed, 1 ok]" in next(ln for ln in lines if "Install packages" in ln)
    assert "▸ Wait for health check" in text  # the task running now
    assert "hosts: web1 ok=3 changed=2 · web2 ok=1 unreachable=1 skipped=1" in text
    header = next(ln for ln in lines if "provision" in ln and "bbbbbbbb" in ln)
    assert header.startswith("✓ ") and "1.5s" not in header  # elapsed is from events
    assert "succeeded in 1.5 s — http://localhost:8001" in text
    header = next(ln for ln in lines if "deploy api" in ln)
    assert header[0] in SPINNER_FRAMES and "waiting for an executor" in header


def test_live_view_shares_the_screen_then_shows_everything_at_the_end() -> None:
    ev = Events()
    p = Progress(RID, label="long")
    p.apply(submitted(ev))
    p.apply(ev(Accepted, executor="ex-a"))
    for i in range(30):
        p.apply(ev(TaskStarted, task=f"Step {i:02d}", play="Long"))
        p.apply(ev(HostResult, host="localhost", task=f"Step {i:02d}", status="ok"))
    live = LiveRenderer(recording_console(height=12))
    live.update(p, ev(TaskStarted, task="unused"))
    text = rendered(live, now=ev.ts)
    assert "Step 29" in text and "Step 00" not in text
    assert re.search(r"… \d+ earlier tasks", text)
    assert len(text.splitlines()) <= 12
    live.final = True
    text = rendered(live, now=ev.ts)
    assert all(f"Step {i:02d}" in text for i in range(30)) and "earlier" not in text


def test_drawing_while_events_arrive_from_another_thread() -> None:
    """rich refreshes from its own thread while the event loop applies events."""
    import threading

    live = LiveRenderer(recording_console(height=20))
    p = Progress(RID, label="busy")
    live.models[RID] = p
    stop = threading.Event()
    errors: list[BaseException] = []

    def draw() -> None:
        try:
            while not stop.is_set():
                rendered(live, now=2000.0)
        except BaseException as exc:  # any crash of the refresh thread
            errors.append(exc)

    t = threading.Thread(target=draw)
    t.start()
    try:
        ev = Events()
        for i in range(300):
            p.apply(ev(TaskStarted, dt=0.01, task=f"t{i}", play=f"play {i // 50}"))
            for h in range(8):
                p.apply(ev(HostResult, dt=0.0, host=f"h{h}-{i % 7}", task=f"t{i}", status="ok"))
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors


def test_line_renderer_plain_lines() -> None:
    out = io.StringIO()
    lr = LineRenderer(out)
    p = Progress(RID)
    ev = Events()
    events = [
        *two_host_run(ev),
        ev(Output, lines=["warning: something"], ansible_event="warning"),
        ev(Output, lines=["PLAY RECAP ***"], ansible_event="playbook_on_stats"),
        ev(Result, status="failed", error="host web2 unreachable", duration_ms=4200,
           stats={"web1": HostStats(ok=3, changed=2), "web2": HostStats(ok=1, unreachable=1)}),
    ]  # fmt: skip
    for e in events:
        p.apply(e)
        lr.update(p, e)
    lines = out.getvalue().splitlines()
    assert all(ln.startswith("[0f3c2a9d] ") for ln in lines)
    body = [ln.removeprefix("[0f3c2a9d] ") for ln in lines]
    assert body[:3] == [
        f"submitted deploy_service (request {RID})",
        "accepted by ex-a",
        "PLAY Deploy service",
    ]
    assert "TASK Fetch repository" in body and "  web1: changed (0 ms)" in body
    assert "    item curl: web1 changed" in body
    assert "  web1: failed (ignored) (0 ms): no" in body
    assert "  web2: unreachable (0 ms): ssh: timed out" in body
    assert "  warning: something" in body and not any("PLAY RECAP" in b for b in body)
    assert body[-3] == (
        "FAILED failed after 4.2 s: host web2 unreachable "
        "[ok=4 changed=2 failed=0 unreachable=1 skipped=0]"
    )
    assert body[-2:] == [
        "  web1: ok=3 changed=2 failed=0 unreachable=0 skipped=0",
        "  web2: ok=1 changed=0 failed=0 unreachable=1 skipped=0",
    ]
    assert "\x1b" not in out.getvalue()


# ---------------------------------------------------------------- a real terminal


class Screen:
    """Just enough of a VT100 to replay rich's output into the final screen."""

    def __init__(self, cols: int) -> None:
        self.cols = cols
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0

    def _put(self, ch: str) -> None:
        if self.col >= self.cols:
            self._newline()
        line = self.lines[self.row]
        line.extend(" " * (self.col - len(line) + 1))
        line[self.col] = ch
        self.col += 1

    def _newline(self) -> None:
        self.row += 1
        self.col = 0
        while len(self.lines) <= self.row:
            self.lines.append([])

    def feed(self, data: str) -> None:
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                if data.startswith("[", i + 1):
                    m = re.compile(r"\[([0-9;?]*)([A-Za-z])").match(data, i + 1)
                    assert m, data[i : i + 20]
                    self._csi(m.group(1), m.group(2))
                    i = m.end()
                    continue
                if data.startswith("]", i + 1):  # OSC (hyperlinks): skip to ST or BEL
                    m = re.compile(r"\].*?(\x07|\x1b\\)", re.S).match(data, i + 1)
                    assert m
                    i = m.end()
                    continue
                i += 2
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self._newline()
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch >= " ":
                self._put(ch)
            i += 1

    def _csi(self, params: str, op: str) -> None:
        if params.startswith("?") or op == "m":
            return  # modes, cursor visibility, colours
        first = params.split(";")[0]
        n = int(first or 1) if op in "ABCDG" else int(first or 0)
        if op == "A":
            self.row = max(0, self.row - n)
        elif op == "B":
            for _ in range(n):
                self._newline()
        elif op == "C":
            self.col += n
        elif op == "D":
            self.col = max(0, self.col - n)
        elif op == "G":
            self.col = n - 1
        elif op == "K":
            line = self.lines[self.row]
            if n == 2:
                line.clear()
            elif n == 0:
                del line[self.col :]
            else:
                line[: self.col] = [" "] * min(self.col, len(line))

    def text(self) -> str:
        return "\n".join("".join(line).rstrip() for line in self.lines).strip("\n")


def tty_env(redis_url: str, keys_dir: Path) -> dict[str, str]:
    env = cli_env(redis_url, keys_dir)
    for var in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES"):
        env.pop(var, None)
    env["TERM"] = "xterm-256color"
    return env


def run_in_pty(
    args: list[str], env: dict[str, str], *, cols: int = 120, rows: int = 50
) -> tuple[int, str]:
    """Run deployctl on a pseudo-terminal; return (exit status, raw output)."""
    child = pexpect.spawn(
        DEPLOYCTL, args, env=env, dimensions=(rows, cols), encoding="utf-8", timeout=240
    )
    child.expect(pexpect.EOF)
    raw = child.before
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}:\n{raw}"
    return child.exitstatus, raw


@pytest.fixture
def quick_executor(executors: Executors) -> Iterator[Executors]:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-live")
    yield executors


@pytest.mark.slow
def test_provision_live_in_a_terminal(
    quick_executor: Executors, redis_url: str, keys_dir: Path
) -> None:
    code, raw = run_in_pty(
        ["provision", "--server", "s1", "--playbook", "quick"], tty_env(redis_url, keys_dir)
    )
    screen = Screen(120)
    screen.feed(raw)
    text = screen.text()
    assert code == 0, text
    # It was a live view: redrawn in place (lines erased), not the plain lines.
    lines = text.splitlines()
    assert "\x1b[2K" in raw and not any(ln.startswith("[") for ln in lines)
    header = next(ln for ln in lines if "quick on ex-live" in ln)
    assert header.startswith("✓ ")
    assert "ok=2 changed=0 failed=0 unreachable=0 skipped=0" in header
    assert re.search(r"\d+\.\ds", header)  # elapsed
    assert any("PLAY Quick" in ln for ln in lines)
    assert re.search(r"✓ Say hello\s+localhost ok", text)
    assert re.search(r"✓ Loop over items\s+localhost ok\s+\[items: 3 ok\]", text)
    assert re.search(r"succeeded in \d+\.\d s", text)
    # Each redraw replaced the last: the final screen holds one copy of the view.
    assert sum("quick on ex-live" in ln for ln in lines) == 1, text


@pytest.mark.slow
def test_tail_of_a_failed_request_in_a_terminal(
    quick_executor: Executors,
    redis_url: str,
    keys_dir: Path,
    rclient: object,
    config: StreamsConfig,
) -> None:
    out = deployctl(
        "provision", "--server", "s1", "--playbook", "fail_task", "--detach",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rid = out.stdout.strip()
    wait_for_result(rclient, config, rid)  # type: ignore[arg-type]
    code, raw = run_in_pty(["tail", rid], tty_env(redis_url, keys_dir))
    screen = Screen(120)
    screen.feed(raw)
    text = screen.text()
    assert code == 1, text
    header = next(ln for ln in text.splitlines() if "fail_task on ex-live" in ln)
    assert header.startswith("✗ ") and "ok=1 changed=0 failed=1" in header
    assert re.search(r"✓ Prepare\s+localhost ok", text)
    assert re.search(r"✗ Break on purpose\s+localhost failed: non-zero return code", text)
    assert "failed after" in text
    assert "at task 'Break on purpose' on localhost: non-zero return code" in text


@pytest.mark.slow
def test_json_on_a_terminal_is_unchanged_ndjson(
    quick_executor: Executors, redis_url: str, keys_dir: Path
) -> None:
    code, raw = run_in_pty(
        ["provision", "--server", "s1", "--playbook", "quick", "--json"],
        tty_env(redis_url, keys_dir),
    )
    assert code == 0, raw
    assert "\x1b" not in raw
    objs = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert objs[0]["type"] == "submitted" and objs[-1]["type"] == "result"
    assert objs[-1]["status"] == "success"
    assert "task_started" in {o["type"] for o in objs}


@pytest.mark.slow
def test_plain_lines_when_not_on_a_terminal(
    quick_executor: Executors, redis_url: str, keys_dir: Path
) -> None:
    env = tty_env(redis_url, keys_dir)
    done = subprocess.run(
        [DEPLOYCTL, "provision", "--server", "s1", "--playbook", "quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and not any(c in done.stdout for c in SPINNER_FRAMES)
    lines = [ln.split("] ", 1)[1] for ln in done.stdout.splitlines()]
    assert lines[0].startswith("submitted quick (request ")
    assert "accepted by ex-live" in lines
    assert lines.index("PLAY Quick") < lines.index("TASK Say hello")
    assert lines.index("TASK Say hello") < lines.index("TASK Loop over items")
    assert sum(ln.startswith("    item ") and ln.endswith("localhost ok") for ln in lines) == 3
    assert re.fullmatch(
        r"SUCCESS succeeded in \d+\.\d s \[ok=2 changed=0 failed=0 unreachable=0 skipped=0\]",
        lines[-1],
    )


def test_terminal_emulator_replays_redraws() -> None:
    s = Screen(20)
    s.feed("one\r\ntwo\r\n\x1b[?25l\r\x1b[2K\x1b[1A\x1b[2K\x1b[1A\x1b[2Kthree\r\nfour\x1b[?25h\r\n")
    assert s.text() == "three\nfour"
    s = Screen(20)
    s.feed("\x1b[1mbold\x1b[0m \x1b]8;id=1;http://x\x1b\\link\x1b]8;;\x1b\\")
    assert s.text() == "bold link"


def test_a_waiting_request_says_what_it_waits_for_until_it_starts() -> None:
    ev = Events()
    live = LiveRenderer(recording_console())
    p = Progress(RID, label="deploy web")
    holder = "9" * 32
    events = [
        submitted(ev),
        ev(Accepted, executor="ex-a", kind="deploy"),
        ev(Waiting, lock="project web on localhost", holder=holder),
    ]
    out = io.StringIO()
    lines = LineRenderer(out)
    for e in events:
        p.apply(e)
        live.update(p, e)
        lines.update(p, e)
    assert p.phase == "waiting"
    expected = f"waiting for project web on localhost (held by {holder})"
    assert f"[deploy web] {expected}\n" in out.getvalue()
    assert f"⏸ {expected}" in rendered(live, now=1010.0)
    for e in [ev(PlaybookStarted, playbook="/p/deploy_service.yml", play="Deploy service"),
              ev(TaskStarted, task="Fetch repository", play="Deploy service")]:  # fmt: skip
        p.apply(e)
    assert p.phase == "running" and p.waiting is None
    assert "⏸" not in rendered(live, now=1011.0)


def test_live_view_and_plain_lines_show_each_hosts_summary() -> None:
    ev = Events()
    result = ev(
        Result, status="failed", duration_ms=4200, failed_hosts=["web2"],
        stats={"web1": HostStats(ok=3, changed=2), "web2": HostStats(ok=1, unreachable=1)},
        hosts={
            "web1": HostSummary(status="changed", url="http://web1:8000"),
            "web2": HostSummary(status="unreachable", msg="ssh: timed out"),
            "web3": HostSummary(status="not_run"),
        },
    )  # fmt: skip
    events = [*two_host_run(ev), result]
    live = LiveRenderer(recording_console())
    out = io.StringIO()
    lines = LineRenderer(out)
    p = Progress(RID, label="deploy web")
    for e in events:
        p.apply(e)
        live.update(p, e)
        lines.update(p, e)
    text = rendered(live, now=1010.0)
    assert "web1: changed [ok=3 changed=2" in text and "http://web1:8000" in text
    assert "web2: unreachable [" in text and "ssh: timed out" in text
    assert "web3: not_run" in text
    plain = out.getvalue()
    assert "  web1: changed [ok=3 changed=2 failed=0 unreachable=0 skipped=0] — " in plain
    assert "  web3: not_run\n" in plain
