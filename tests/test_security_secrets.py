"""Secrets never leak: sealed on the wire, redacted everywhere, never in argv or on disk.

- a full deploy of the sample service with a secret and a GitHub token, then a scan
  of every Redis key, the CLI output and logs, the executor's log, every file the
  run could have written, and of every process's argv sampled while it ran;
- a playbook that tries every way to print its secrets (``tests/ansible/leaky.yml``):
  events, result, logs and CLI output hold only ``***``; ``no_log`` stays hidden;
  ansible-runner's status data (the environment) never reaches a stream or a log;
- the redactor itself: every encoded form, inside longer text, in log lines.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import string
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, quote_plus

import pytest
import redis

from contracts import DeployJob, HostResult, Result, StreamsConfig, Submitted
from deploystream.embedded_redis import free_port
from deploystream.redact import MASK, Redactor, variants
from deploystream.sample_service import create_sample_repo, stop_service
from tests.harness import DEPLOYCTL, ENV_FILE_MODE, Executors, cli_env, read_events

ANSIBLE_DIR = Path(__file__).parent / "ansible"


# ---------------------------------------------------------------- what a leak looks like


def random_token() -> str:
    """A GitHub-shaped personal access token (``ghp_`` + 36 alphanumerics)."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def encoded_forms(value: str) -> list[bytes]:
    """The value as is, URL-encoded and base64-encoded, also inside longer base64.

    Written independently of :mod:`deploystream.redact`: the scan must not trust the
    code it checks.
    """
    raw = value.encode()
    forms = {raw, quote(value, safe="").encode(), quote_plus(value).encode()}
    for prefix in (b"", b"x", b"xy"):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(prefix + raw + b"zz")
            # Drop the characters that also depend on the neighbouring bytes.
            forms.add(text[(len(prefix) * 4 + 2) // 3 + 1 : len(text) - 5])
    forms.add(base64.b64encode(raw))
    return sorted(f for f in forms if len(f) >= 8)


def leaks(blobs: Iterable[tuple[str, bytes]], needles: dict[str, list[bytes]]) -> list[str]:
    """``where: which secret (which form)`` for every blob holding any form of a secret."""
    found = []
    for where, blob in blobs:
        for name, forms in needles.items():
            for form in forms:
                if form in blob:
                    found.append(f"{where}: {name} ({form[:12]!r}…)")
    return found


def redis_blobs(sync_client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """Every key name and every value in the database: streams field by field."""
    client: Any = sync_client  # redis-py's sync types are unions with Awaitable
    for key in client.scan_iter(count=500):
        yield f"key name {key!r}", key
        kind = client.type(key)
        if kind == b"stream":
            last = "-"
            while True:
                entries = client.xrange(key, min=last, max="+", count=500)
                for entry_id, fields in entries:
                    for field, value in fields.items():
                        yield f"{key!r} {entry_id!r} {field!r}", field + b"=" + value
                if len(entries) < 500:
                    break
                last = "(" + entries[-1][0].decode()
        elif kind == b"string":
            yield f"{key!r}", client.get(key) or b""
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                yield f"{key!r} {field!r}", field + b"=" + value
        elif kind == b"list":
            for i, value in enumerate(client.lrange(key, 0, -1)):
                yield f"{key!r}[{i}]", value
        elif kind == b"set":
            for value in client.smembers(key):
                yield f"{key!r} member", value
        elif kind == b"zset":
            for value, _ in client.zrange(key, 0, -1, withscores=True):
                yield f"{key!r} member", value
        else:
            yield f"{key!r} dump", client.dump(key) or b""


def file_blobs(
    root: Path, *, skip: Iterable[Path] = (), since: float = 0.0
) -> Iterator[tuple[str, bytes]]:
    """Every regular file under ``root`` (modified after ``since``), without following links."""
    skipped = {p.resolve() for p in skip}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
                if not path.is_file() or path.is_symlink() or st.st_mtime < since:
                    continue
                if path.resolve() in skipped or st.st_size > 50 << 20:
                    continue
                yield str(path), path.read_bytes()
            except OSError:
                continue  # vanished or unreadable (another process's private file)
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]


class ArgvSampler(threading.Thread):
    """Reads every process's ``/proc/PID/cmdline`` in a loop until stopped."""

    def __init__(self, needles: dict[str, list[bytes]]) -> None:
        super().__init__(daemon=True)
        self.needles = needles
        self.hits: list[tuple[int, str, bytes]] = []
        self.sweeps = 0
        self.seen_ansible = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        argv = fh.read()
                except OSError:
                    continue
                if b"ansible-playbook" in argv or b"AnsiballZ" in argv:
                    self.seen_ansible = True
                for name, forms in self.needles.items():
                    if any(form in argv for form in forms):
                        self.hits.append((int(entry), name, argv[:300]))
            self.sweeps += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# ---------------------------------------------------------------- 1. the full deploy


def test_deploy_leaves_no_plaintext_secret_anywhere(
    executors: Executors,
    redis_url: str,
    keys_dir: Path,
    config: StreamsConfig,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    started = time.time()
    db_password = "dbpw-" + secrets.token_hex(16)
    token = random_token()
    needles = {"DB_PASSWORD": encoded_forms(db_password), "github token": encoded_forms(token)}
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    # Everything either side writes to "a temp dir" lands where it is scanned.
    executors.start("ex-sec", TMPDIR=str(tmpdir))
    repo = create_sample_repo(tmp_path / "repo", greeting_var="DB_PASSWORD")
    port = free_port()
    app_dir = executors.apps_root / "sample"
    checkpoint = tmp_path / "orchestrator" / "checkpoints.sqlite"

    sampler = ArgvSampler(needles)
    sampler.start()
    try:
        env = cli_env(
            redis_url,
            keys_dir,
            GITHUB_TOKEN=token,  # the documented variable: never on a command line
            TMPDIR=str(tmpdir),
            DEPLOYSTREAM_CHECKPOINT_DB=str(checkpoint),
        )
        client = subprocess.Popen(
            [
                DEPLOYCTL,
                "--log-level",
                "debug",
                "deploy",
                "--project",
                "sample",
                "--repo",
                repo,
                "--service-port",
                str(port),
                "--secret",
                f"DB_PASSWORD={db_password}",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            out, err = client.communicate(timeout=240)
        finally:
            if client.poll() is None:
                client.kill()
        assert client.returncode == 0, (out.decode()[-3000:], err.decode()[-3000:])
        lines = [json.loads(line) for line in out.splitlines()]
        result = next(x for x in lines if x["type"] == "result")
        assert result["status"] == "success", result
        # The service got the secret: it answers with it (test service only).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert json.loads(resp.read())["greeting"] == db_password
    finally:
        sampler.stop()
        stop_service(app_dir)

    # The deployed .env holds the secret, readable by its owner only.
    env_file = app_dir / ".env"
    assert f"DB_PASSWORD='{db_password}'" in env_file.read_text()
    assert env_file.stat().st_mode & 0o777 == ENV_FILE_MODE

    # argv: no process but the operator's own `deployctl deploy --secret ...` ever
    # carried a value (the token went through GITHUB_TOKEN, so not even there).
    foreign = [h for h in sampler.hits if h[0] != client.pid]
    assert not foreign, foreign
    assert all(name == "DB_PASSWORD" for _, name, _ in sampler.hits), sampler.hits
    assert sampler.seen_ansible, "the sampler never saw Ansible run: it proved nothing"
    assert sampler.sweeps > 10

    # Redis: every key, every stream entry's every field, every string and hash.
    blobs = list(redis_blobs(rclient))
    assert any(b"ansible.deploy" in name.encode() for name, _ in blobs)
    assert not leaks(blobs, needles)
    # ... while the job on the wire carries the secret, sealed (and no token: see above).
    submitted = read_events(rclient, config, result["request_id"])[0]
    assert isinstance(submitted, Submitted) and isinstance(submitted.job, DeployJob)
    assert set(submitted.job.secrets) == {"DB_PASSWORD"} and submitted.job.github_token is None

    # CLI output and logs (stdout, stderr with debug logging), the executor's log.
    assert not leaks([("cli stdout", out), ("cli stderr", err)], needles)
    executor_log = executors.procs[0].log.read_bytes()
    assert b"job.finished" in executor_log
    assert not leaks([("executor log", executor_log)], needles)

    # Files: the run dirs are gone; nothing the run wrote holds a value (temp dirs,
    # the work dir, the orchestrator's checkpoint, the clone), except the .env itself.
    assert executors.work_left() == []
    assert checkpoint.exists(), "the deploy went through the graph and its checkpoint"
    assert not leaks(file_blobs(tmp_path, skip=[env_file]), needles)
    assert not leaks(file_blobs(Path("/tmp"), skip=[env_file], since=started), needles)


# ---------------------------------------------------------------- 6. a leaky playbook


def test_leaky_playbook_is_redacted_everywhere(
    executors: Executors,
    redis_url: str,
    keys_dir: Path,
    config: StreamsConfig,
    rclient: redis.Redis,
) -> None:
    api_key = "apikey-" + secrets.token_hex(12)
    token = random_token()
    needles = {"API_KEY": encoded_forms(api_key), "github token": encoded_forms(token)}
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-leaky")
    client = subprocess.run(
        [
            DEPLOYCTL,
            "--log-level",
            "debug",
            "deploy",
            "--detach",
            "--project",
            "leaky",
            "--repo",
            "https://github.com/o/leaky.git",
            "--service-port",
            "8000",
            "--playbook",
            "leaky",
            "--secret",
            f"API_KEY={api_key}",
            "--json",
        ],
        env=cli_env(redis_url, keys_dir, GITHUB_TOKEN=token),
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert client.returncode == 0, client.stderr.decode()
    request_id = json.loads(client.stdout.splitlines()[-1])["request_id"]
    tail = subprocess.run(
        [DEPLOYCTL, "--log-level", "debug", "tail", request_id],
        env=cli_env(redis_url, keys_dir),
        capture_output=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    tail_json = subprocess.run(
        [DEPLOYCTL, "tail", request_id, "--json"],
        env=cli_env(redis_url, keys_dir),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert tail.returncode == 1, tail.stderr.decode()  # the last task fails on purpose

    events = read_events(rclient, config, request_id)
    result = events[-1]
    assert isinstance(result, Result) and result.status == "failed", result
    raw_entries: list[tuple[bytes, dict[bytes, bytes]]] = cast(Any, rclient).xrange(
        config.events_key(request_id)
    )
    blobs = [(f"event {fields[b'type']!r}", fields[b"data"]) for _, fields in raw_entries]
    blobs += [
        ("deploy output", client.stdout + client.stderr),
        ("tail", tail.stdout + tail.stderr),
        ("tail --json", tail_json.stdout),
        ("executor log", executors.procs[0].log.read_bytes()),
    ]
    assert not leaks(blobs, needles)

    # The playbook did run and print them: what reached us is the mask.
    by_task = {e.task: e for e in events if isinstance(e, HostResult) and not e.item}
    assert f"Task named after {MASK}" in by_task, sorted(by_task)
    assert by_task[f"Task named after {MASK}"].msg == f"the key is {MASK}"
    assert MASK in by_task["Print the secrets file to stdout"].msg
    shown = by_task["Show the token and an Authorization header built from it"].msg
    assert shown.count(MASK) >= 5, shown
    assert by_task["Ignored failure"].msg == f"ignored failure mentions {MASK}"
    assert result.failed_task == f"Fail for {MASK}"
    assert result.error is not None and MASK in result.error
    assert any(e.task == f"Loop over the key ({MASK})" for e in events if isinstance(e, HostResult))
    # no_log tasks: Ansible's own censor text, not even a masked value.
    for hidden in ("Hidden debug", "Hidden command"):
        assert "no_log" in by_task[hidden].msg, by_task[hidden]
    assert not any(b"hidden-marker" in blob for _, blob in blobs)

    # ansible-runner's status data carries the run's environment: never published.
    for _, blob in blobs:
        for marker in (b"DEPLOYSTREAM_GIT_TOKEN", b"ANSIBLE_LOCAL_TEMP", b"envvars"):
            assert marker not in blob, marker


# ---------------------------------------------------------------- the redactor


@pytest.mark.parametrize(
    "value",
    [
        "hunter2-plain",
        "with space and 'quotes' \"double\" \\back",
        "ünïcödé-sécret",
        "line-one-secret\nline-two-secret",
    ],
)
def test_redactor_masks_every_form(value: str) -> None:
    redact = Redactor([value])
    raw = value.encode()
    texts = [
        f"plain {value} end",
        f"url {quote(value, safe='')} end",
        f"plus {quote_plus(value)} end",
        f"b64 {base64.b64encode(raw).decode()} end",
        f"b64url {base64.urlsafe_b64encode(raw).decode()} end",
        f"inside {base64.b64encode(b'user:' + raw + b'@host').decode()} end",
        f"json {json.dumps({'k': value})} end",
        f"repr {value!r} end",
    ]
    for text in texts:
        out = redact(text)
        assert MASK in out, text
        assert value not in out
        for line in value.splitlines():
            assert line not in out
    assert redact("nothing to see") == "nothing to see"


def test_redactor_masks_token_shapes_without_knowing_them() -> None:
    redact = Redactor()
    token = random_token()
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    for text in (
        f"token {token}",
        "github_pat_" + "a" * 40,
        pem,
        "https://x-access-token:abcdef123@github.com/o/r.git",
        "Authorization: Bearer abc.def.ghi",
        "AKIAABCDEFGHIJKLMNOP",
    ):
        assert MASK in redact(text), text
    assert token not in redact(f"token {token}")
    assert "AAAA" not in redact(pem)


def test_short_values_are_not_masked_but_everything_longer_is() -> None:
    assert variants("abc") == set()
    assert Redactor(["abc"])("abc abcd") == "abc abcd"
    assert Redactor(["abcd"])("abc abcd") == f"abc {MASK}"


def test_active_secrets_reach_every_log_line() -> None:
    """A value registered with ``redact.active`` is masked in structlog output."""
    value = "log-secret-" + secrets.token_hex(8)
    token = random_token()
    script = f"""
import structlog
from deploystream import logs
from deploystream.redact import active
logs.configure("info", json=True)
log = structlog.get_logger("test")
with active([{value!r}]):
    log.info("during", detail="x {value} y", token={token!r})
log.info("after", detail={value!r})
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    during = json.loads(lines[0])
    assert value not in lines[0] and during["detail"] == f"x {MASK} y"
    assert token not in lines[0] and during["token"] == MASK
    assert json.loads(lines[1])["detail"] == value  # unregistered again: plain text


def test_a_secret_cut_by_truncation_is_still_masked() -> None:
    """Messages and output lines are shortened: redaction must come first, or a cut
    through a secret would publish its first half."""
    from executor.translate import MSG_MAX, translate

    value = "cut-secret-" + secrets.token_hex(16)
    redact = Redactor([value])
    head = value[: len(value) // 2]
    for raw in (
        {
            "event": "runner_on_failed",
            "event_data": {"host": "h", "task": "t", "res": {"msg": "x" * (MSG_MAX - 20) + value}},
        },
        {"event": "verbose", "stdout": "y" * 4080 + value},
        {
            "event": "runner_item_on_ok",
            "event_data": {"host": "h", "task": "t", "res": {"item": "z" * 90 + value}},
        },
    ):
        event = translate(raw, request_id="r", attempt=1, ts=0.0, redact=redact, line_max=4096)
        assert event is not None
        text = json.dumps(msgspec_builtins(event))
        assert head not in text, text[-200:]


def msgspec_builtins(event: object) -> object:
    import msgspec

    return msgspec.to_builtins(event)
