"""Forged results, cancels, dead letters and presence (issue 19): a Redis credential
alone cannot speak for the other side.

Each test plays the attacker of the review with the shipped ACL users and no signing
key: the orchestrator user writes a ``result`` (success, an attacker's URL) and a
control-stream cancel, the executor user a ``cancel_requested``, a dead letter and a
presence hash. On the code before signing, the forged result ended the tail with
SUCCESS and exit 0, the cancels cancelled, ``dlq replay`` re-ran the planted entry
and ``status`` listed the fake executor. Now each is shown as unverified and has no
effect, and the genuine path still works beside it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import redis
from pytest_httpserver import HTTPServer

from contracts import (
    Accepted,
    CancelRequested,
    Event,
    Result,
    StreamsConfig,
    TaskStarted,
    Unverified,
    load_config,
)
from contracts.codec import encode
from contracts.control import Cancel
from deploystream.embedded_redis import EmbeddedRedis
from deploystream.keys import ExecutorKeys, OrchestratorKeys, Signer
from deploystream.proofs import EventVerifier, sign_batch
from deploystream.redis_conn import connect
from orchestrator.client import StreamClient
from orchestrator.run import run_deploy_graph
from orchestrator.state import exit_code
from tests.faults_support import fault_env, wait_for
from tests.forge_support import write_batch, write_plain
from tests.graph_support import make_settings
from tests.harness import Executors, deployctl
from tests.test_post_deploy import REQUEST, PlatformStandIn
from tests.test_security_redis import as_user, render_acl, url_for

_as: Any = as_user  # sync redis-py clients: typed loosely, as in test_security_redis

ANSIBLE_DIR = Path(__file__).parent / "ansible"
USERS = ("admin", "orchestrator", "executor")
ATTACKER_URL = "http://attacker.example:8666"


@pytest.fixture
def passwords() -> dict[str, str]:
    return {user: f"{user}-forge-test-pw" for user in USERS}


@pytest.fixture
def acl_server(tmp_path: Path, passwords: dict[str, str]) -> Iterator[EmbeddedRedis]:
    acl = render_acl(tmp_path / "users.acl", passwords)
    with EmbeddedRedis(extra_args=["--aclfile", str(acl)]) as server:
        yield server


class Users:
    """The shipped ACL users of ``acl_server``: a URL and a client for each."""

    def __init__(self, server: EmbeddedRedis, passwords: dict[str, str]) -> None:
        self._server, self._passwords = server, passwords
        self._clients: list[Any] = []

    def url(self, user: str) -> str:
        return url_for(self._server, user, self._passwords[user])

    def client(self, user: str) -> Any:
        client = _as(self._server.port, user, self._passwords[user])
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def users(acl_server: EmbeddedRedis, passwords: dict[str, str], keys_dir: Path) -> Iterator[Users]:
    group = Users(acl_server, passwords)
    # The consumer groups are made by the admin step (the executor user may not).
    setup = deployctl("setup-redis", redis_url=group.url("admin"), keys_dir=keys_dir)
    assert setup.returncode == 0, setup.stderr
    yield group
    group.close()


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _types(client: Any, key: str) -> list[bytes]:
    return [f[b"type"] for _, f in client.xrange(key)]


@pytest.mark.slow
def test_forged_result_and_cancels_are_shown_unverified_and_change_nothing(
    users: Users, keys_dir: Path, tmp_path: Path
) -> None:
    cfg = load_config()
    orch_url, exec_url = users.url("orchestrator"), users.url("executor")
    orch, execu = users.client("orchestrator"), users.client("executor")

    # A job that fails, queued while no executor runs.
    sub = deployctl(
        "provision", "--server", "s1", "--playbook", "fail_task", "--detach",
        redis_url=orch_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    rid = sub.stdout.strip()
    key = cfg.events_key(rid)
    now = time.time()
    forged = Result(
        request_id=rid, seq=1, ts=now, attempt=1, status="success",
        deployed_url=ATTACKER_URL, event_count=1, executor="ex-forge",
    )  # fmt: skip
    write_plain(orch, key, forged)  # the orchestrator user, unsigned
    write_batch(orch, key, [forged])  # ... and with a made-up signature
    # The executor user asks for a cancel of the queued job (it may not XADD control).
    write_plain(
        execu,
        key,
        CancelRequested(request_id=rid, seq=0, ts=now, attempt=0, by="ops", reason="forged"),
    )

    group = Executors(redis_url=exec_url, keys_dir=keys_dir, base=tmp_path)
    group.project_dir = ANSIBLE_DIR
    try:
        ex = group.start("ex-forge")
        tail = deployctl("tail", rid, redis_url=orch_url, keys_dir=keys_dir)
        assert tail.returncode == 1, (tail.stdout, tail.stderr)  # the job failed
        assert "unverified result ignored" in tail.stdout, tail.stdout
        assert "unverified cancel_requested ignored" in tail.stdout, tail.stdout
        assert "FAILED" in tail.stdout and "SUCCESS" not in tail.stdout, tail.stdout
        assert ATTACKER_URL not in tail.stdout
        as_json = deployctl("tail", rid, "--json", redis_url=orch_url, keys_dir=keys_dir)
        lines = [json.loads(ln) for ln in as_json.stdout.splitlines()]
        assert as_json.returncode == 1
        assert [e["status"] for e in lines if e["type"] == "result"] == ["failed"]
        assert sum(1 for e in lines if e["type"] == "unverified") == 3
        # The executor ran it (a forged result is not a duplicate, a forged cancel
        # not a cancel) and published its own result after the forged ones.
        assert _types(orch, key).count(b"result") == 3
        assert "result.unverified" in ex.output() and "cancel.unverified" in ex.output()

        # A cancel on the control stream without the orchestrator's key: ignored.
        sub2 = deployctl(
            "provision", "--server", "s2", "--playbook", "sleep", "--extra-var", "sleep_s=3",
            "--detach", redis_url=orch_url, keys_dir=keys_dir,
        )  # fmt: skip
        assert sub2.returncode == 0, sub2.stderr
        rid2 = sub2.stdout.strip()
        _wait(lambda: b"task_started" in _types(orch, cfg.events_key(rid2)), 60, "a task")
        command = encode(Cancel(request_id=rid2, by="ops", ts=time.time()))
        orch.xadd(cfg.streams.control, {"data": command})
        orch.xadd(cfg.streams.control, {"data": command, "sig": "AAAA" * 22, "kid": "x" * 16})
        done = deployctl("tail", rid2, "--json", redis_url=orch_url, keys_dir=keys_dir)
        assert json.loads(done.stdout.splitlines()[-1])["status"] == "success", done.stdout
        assert ex.output().count("cancel.unverified") >= 3

        # The genuine cancel still works: signed by the orchestrator key.
        sub3 = deployctl(
            "provision", "--server", "s3", "--playbook", "sleep", "--extra-var", "sleep_s=60",
            "--detach", redis_url=orch_url, keys_dir=keys_dir,
        )  # fmt: skip
        rid3 = sub3.stdout.strip()
        _wait(lambda: b"task_started" in _types(orch, cfg.events_key(rid3)), 60, "a task")
        assert deployctl("cancel", rid3, redis_url=orch_url, keys_dir=keys_dir).returncode == 0
        last = deployctl("tail", rid3, "--json", redis_url=orch_url, keys_dir=keys_dir)
        assert json.loads(last.stdout.splitlines()[-1])["status"] == "canceled"
    finally:
        group.stop_all()


@pytest.mark.slow
def test_planted_dead_letter_and_fake_presence_are_not_believed(
    users: Users, keys_dir: Path, tmp_path: Path
) -> None:
    cfg = load_config()
    orch_url, admin_url, exec_url = (users.url(u) for u in ("orchestrator", "admin", "executor"))
    admin, execu = users.client("admin"), users.client("executor")
    group = Executors(redis_url=exec_url, keys_dir=keys_dir, base=tmp_path)
    group.project_dir = ANSIBLE_DIR
    stream = cfg.streams.provision
    dead = cfg.dead_key(stream)
    try:
        group.start("ex-real")
        # A genuine job, run to its end: its signed entry is what the attacker copies.
        sub = deployctl(
            "provision", "--server", "s1", "--playbook", "quick",
            redis_url=orch_url, keys_dir=keys_dir,
        )  # fmt: skip
        assert sub.returncode == 0, sub.stderr
        [(_, job_fields)] = admin.xrange(stream)
        # A genuine dead letter beside it: an unsigned entry the executor rejects.
        admin.xadd(stream, {"job": b"{}"})
        _wait(lambda: admin.xlen(dead) == 1, 60, "the executor's dead letter")
        genuine_id = admin.xrange(dead)[0][0].decode()

        # The executor user plants a copy of the old job as a dead letter.
        planted = {**job_fields, b"reason": b"executor died", b"delivery_count": b"3",
                   b"attempt": b"3", b"source_stream": stream.encode(),
                   b"executor": b"ex-real", b"dead_at": str(time.time()).encode()}  # fmt: skip
        planted_id = execu.xadd(dead, planted).decode()
        forged_proof = {**planted, b"dead_sig": b"AAAA" * 22, b"dead_kid": b"0" * 16}
        forged_id = execu.xadd(dead, forged_proof).decode()

        listing = deployctl("dlq", "list", "--json", redis_url=orch_url, keys_dir=keys_dir)
        assert listing.returncode == 0, listing.stderr
        rows = {r["entry_id"]: r for r in map(json.loads, listing.stdout.splitlines())}
        assert rows[genuine_id]["verified"] is True
        assert rows[planted_id]["verified"] is False and rows[forged_id]["verified"] is False
        human = deployctl("dlq", "list", redis_url=orch_url, keys_dir=keys_dir)
        assert human.stdout.count("UNVERIFIED") == 2, human.stdout

        length = admin.xlen(stream)
        for entry in (planted_id, forged_id):
            refused = deployctl("dlq", "replay", entry, redis_url=admin_url, keys_dir=keys_dir)
            assert refused.returncode == 2, (refused.stdout, refused.stderr)
            assert "not signed by a trusted executor" in refused.stderr
            assert "Traceback" not in refused.stderr
        assert admin.xlen(stream) == length  # nothing re-enqueued
        replayed = deployctl("dlq", "replay", genuine_id, redis_url=admin_url, keys_dir=keys_dir)
        assert replayed.returncode == 0, replayed.stderr
        assert admin.xlen(stream) == length + 1

        # A presence hash the executor user makes up is no running executor.
        fake = cfg.executor_key("ghost")
        execu.hset(fake, mapping={"name": "ghost", "state": "running", "seen": time.time(),
                                  "concurrency": 64, "playbooks": "ghostbook"})  # fmt: skip
        execu.expire(fake, 60)
        status = deployctl("status", "--json", redis_url=orch_url, keys_dir=keys_dir)
        assert status.returncode == 0, status.stderr
        snap = json.loads(status.stdout)
        assert [e["name"] for e in snap["executors"]] == ["ex-real"]
        assert [u["key"] for u in snap["unverified_executors"]] == [fake]
        # What it claims to offer is not offered: a submit names only real playbooks.
        ghost = deployctl(
            "provision", "--server", "s9", "--playbook", "ghostbook", "--detach",
            redis_url=orch_url, keys_dir=keys_dir,
        )  # fmt: skip
        assert ghost.returncode == 2 and "unknown playbook" in ghost.stderr, ghost.stderr
        human_status = deployctl("status", redis_url=orch_url, keys_dir=keys_dir)
        assert "unverified presence ignored" in human_status.stdout
        assert "ghost" not in human_status.stdout.split("unverified presence")[0]
    finally:
        group.stop_all()


def test_orchestrator_user_cannot_write_idempotency_keys_without_a_ttl(users: Users) -> None:
    """Only SETEX: no SET (direct or from a script), so every key it makes expires."""
    cfg = load_config()
    orch, admin = users.client("orchestrator"), users.client("admin")
    key = cfg.idempotency_key("forever")
    for command in (
        ("SET", key, "x" * 100_000),
        ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", key),
        ("PERSIST", key),
    ):
        with pytest.raises(redis.ResponseError, match=r"no permissions|can't run"):
            orch.execute_command(*command)
    assert orch.setex(key, 60, "r1") is True
    assert 0 < admin.ttl(key) <= 60


def test_an_executor_key_nobody_trusts_signs_nothing(keys_dir: Path, tmp_path: Path) -> None:
    """The executor side loads its own signing key; the orchestrator side's trust is
    the public halves (executor-sign.pub, executors.d/*.pub) and nothing else."""
    from deploystream import keys as keymod
    from deploystream.errors import KeyMaterialError

    ex = ExecutorKeys.load(keys_dir)
    orch = keymod.OrchestratorKeys.load(keys_dir)
    message = b"batch"
    orch.trust.executor_signed(message, ex.signer.sign(message), ex.signer.kid)
    other_dir = tmp_path / "other"
    keymod.init_keys(other_dir)
    stranger = ExecutorKeys.load(other_dir).signer
    with pytest.raises(KeyMaterialError, match="unknown key"):
        orch.trust.executor_signed(message, stranger.sign(message), stranger.kid)
    # Given its public half in executors.d, it is trusted too (its own identity).
    (keys_dir / keymod.EXECUTORS_DIR).mkdir()
    (keys_dir / keymod.EXECUTORS_DIR / "ex-b.pub").write_bytes(
        (other_dir / keymod.EXEC_SIGN_PUBLIC).read_bytes()
    )
    trust = keymod.Trust.load(keys_dir)
    assert trust.executor_signed(message, stranger.sign(message), stranger.kid) == stranger.kid
    # The orchestrator's signature is not an executor's.
    with pytest.raises(KeyMaterialError):
        trust.executor_signed(message, orch.signer.sign(message), orch.kid)


# ---------------------------------------------------------------- the graph and post-deploy


@pytest.mark.anyio
async def test_graph_ignores_a_forged_success_and_runs_no_post_deploy(
    tmp_path: Path,
    keys_dir: Path,
    config: StreamsConfig,
    rclient: redis.Redis,
    httpserver: HTTPServer,
) -> None:
    """The review's attack: a forged ``result`` (success, an attacker's URL) made the
    graph record the attacker's URL with the platform API and exit 0."""
    api = PlatformStandIn(httpserver)
    api.serve()
    settings = make_settings(tmp_path, api_url=httpserver.url_for("/"), api_token="t")
    keys = OrchestratorKeys.load(keys_dir)
    signer = ExecutorKeys.load(keys_dir).signer
    rid = "req-forged-graph"
    key = config.events_key(rid)
    seen: list[Event] = []
    r = connect(config.redis.url)
    final: dict[str, Any] = {}
    try:
        client = StreamClient(r, config, keys, name="graph-forge")

        async def deploy() -> None:
            final.update(
                await run_deploy_graph(
                    REQUEST,
                    gateway=client,
                    keys=keys,
                    settings=settings,
                    thread_id=rid,
                    on_event=seen.append,
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(deploy)
            with anyio.fail_after(30):
                while not rclient.exists(key):
                    await anyio.sleep(0.05)
            now = time.time()
            write_plain(
                rclient,
                key,
                Result(
                    request_id=rid, seq=1, ts=now, status="success",
                    deployed_url=ATTACKER_URL, event_count=1,
                ),
            )  # fmt: skip
            write_batch(
                rclient,
                key,
                [
                    Accepted(request_id=rid, seq=1, ts=now, executor="ex-1"),
                    Result(
                        request_id=rid,
                        seq=2,
                        ts=now,
                        status="failed",
                        error="health check failed",
                        event_count=2,
                    ),
                ],
                signer,
            )
    finally:
        await r.aclose()
    assert final["outcome"] == "deploy_failed", final
    assert exit_code(final) == 1
    assert final["result"]["status"] == "failed"
    # No deployment record of the attacker's URL; the project is marked failed.
    assert api.records == [] and api.count("POST", "/api/service-deployments/") == 0
    assert [p["status"] for p in api.patches] == ["error"]
    assert ATTACKER_URL not in json.dumps(api.patches)
    notes = [e for e in seen if isinstance(e, Unverified)]
    assert [n.claimed for n in notes] == ["result"]


# ---------------------------------------------------------------- the reader's rules


def _entry(event: Event, **extra: Any) -> dict[bytes, bytes]:

    tag = msgspec.inspect.type_info(type(event)).tag  # type: ignore[attr-defined]
    fields = {b"type": str(tag).encode(), b"seq": str(event.seq).encode(), b"data": encode(event)}
    return fields | {
        k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in extra.items()
    }


def _signed(
    signer: Signer, key: str, events: list[Event], start: int = 0
) -> list[tuple[str, dict[bytes, bytes]]]:
    datas = [encode(e) for e in events]
    sig, kid = sign_batch(signer, key, datas)
    out = []
    for i, event in enumerate(events):
        extra: dict[str, Any] = {}
        if i == len(events) - 1:
            extra = {"n": len(events), "sig": sig, "kid": kid}
        out.append((f"{start + i + 1}-0", _entry(event, **extra)))
    return out


@pytest.mark.anyio
async def test_verifier_completes_a_batch_cut_by_a_read_and_binds_each_attempt(
    keys_dir: Path, tmp_path: Path
) -> None:
    from deploystream import keys as keymod

    rid, key, now = "r-1", "ansible.events:{r-1}", time.time()
    mine = ExecutorKeys.load(keys_dir).signer
    keymod.init_keys(tmp_path / "b")
    other = ExecutorKeys.load(tmp_path / "b").signer
    trust = keymod.Trust(
        executors={mine.kid: mine.key.verify_key, other.kid: other.key.verify_key},
        orchestrators={},
    )
    batch = _signed(
        mine,
        key,
        [
            Accepted(request_id=rid, seq=1, ts=now, executor="ex-a"),
            TaskStarted(request_id=rid, seq=2, ts=now, task="t"),
            TaskStarted(request_id=rid, seq=3, ts=now, task="u"),
        ],
    )
    asked: list[tuple[str, int]] = []

    async def before(entry_id: str, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        asked.append((entry_id, count))
        index = [e for e, _ in batch].index(entry_id)
        return batch[index - count : index]

    # A reader that resumes after the batch's first entry: it reads the rest back.
    verifier = EventVerifier(trust, rid, key, before)
    out = []
    for entry_id, fields in batch[1:]:
        out += await verifier.add(entry_id, fields)
    assert asked == [("2-0", 1)]
    assert [type(e).__name__ for _, e in out] == ["TaskStarted", "TaskStarted"]

    # Another trusted executor's key cannot finish this attempt.
    stolen = _signed(
        other,
        key,
        [Result(request_id=rid, seq=4, ts=now, status="success", event_count=4)],
        start=3,
    )
    # A stray unsigned entry, then the genuine result of the attempt's own key.
    stray = ("5-0", _entry(Result(request_id=rid, seq=4, ts=now, status="success")))
    genuine = _signed(
        mine,
        key,
        [Result(request_id=rid, seq=4, ts=now, status="failed", event_count=4)],
        start=5,
    )
    verifier = EventVerifier(trust, rid, key, before)
    got = []
    for entry_id, fields in [*batch, *stolen, stray, *genuine]:
        got += await verifier.add(entry_id, fields)
    kinds = [(type(e).__name__, getattr(e, "reason", "")) for _, e in got]
    assert [k for k, _ in kinds] == [
        "Accepted", "TaskStarted", "TaskStarted", "Unverified", "Unverified", "Result",
    ]  # fmt: skip
    assert "another executor key" in kinds[3][1]
    assert "unsigned" in kinds[4][1]
    assert got[-1][1].status == "failed"  # type: ignore[union-attr]
    # Unsigned entries left when a read has returned everything there was.
    tail = EventVerifier(trust, rid, key, before)
    assert await tail.add(*stray) == []
    assert [type(e).__name__ for _, e in tail.settle()] == ["Unverified"]


# ---------------------------------------------------------------- file:// repos are opt-in


@pytest.mark.slow
def test_an_executor_started_plainly_refuses_file_repos(
    redis_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """A file:// repo reads whatever repository sits on the executor's disk: only an
    executor started with --allow-file-repos (the demo, the tests) takes one."""
    from executor.settings import ExecutorSettings
    from tests.harness import DEPLOYCTL, cli_env

    assert ExecutorSettings().allow_file_repos is False
    repo = tmp_path / "secret-repo"
    repo.mkdir()

    def submit() -> subprocess.CompletedProcess[str]:
        return deployctl(
            "deploy", "--detach", "--project", "svc", "--repo", f"file://{repo}",
            "--service-port", "18999", "--playbook", "quick",
            redis_url=redis_url, keys_dir=keys_dir,
        )  # fmt: skip

    # Queued while no executor announces anything (the submit side cannot check).
    sub = submit()
    assert sub.returncode == 0, sub.stderr
    log = tmp_path / "plain.log"
    env = cli_env(redis_url, keys_dir)
    env.pop("DEPLOYSTREAM_ALLOW_FILE_REPOS", None)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [DEPLOYCTL, "executor", "--name", "plain", "--project-dir", str(ANSIBLE_DIR),
             "--apps-root", str(tmp_path / "apps"), "--work-dir", str(tmp_path / "work")],
            env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        _wait(lambda: "executor.started" in log.read_text(), 60, "the executor")
        tail = deployctl(
            "tail", sub.stdout.strip(), "--json", redis_url=redis_url, keys_dir=keys_dir
        )
        result = json.loads(tail.stdout.splitlines()[-1])
        assert result["status"] == "rejected", result
        assert "file:// repositories are not allowed" in result["error"]
        assert tail.returncode == 1
        # Now that it announces (signed) that it takes none, the submit side refuses too.
        again = submit()
        assert again.returncode == 2 and "--repo" in again.stderr, again.stderr
    finally:
        proc.terminate()
        proc.wait(30)


def _forged_success(request_id: str) -> Result:
    return Result(
        request_id=request_id, seq=1, ts=time.time(), attempt=1, status="success",
        deployed_url=ATTACKER_URL, event_count=1, executor="ex-forge",
    )  # fmt: skip


@pytest.mark.slow
def test_a_forged_result_does_not_keep_a_dead_letter_from_its_error_result(
    tmp_path: Path,
) -> None:
    """Before: the dead-letter step saw "a result exists" in the planted one and
    published no error, so the request never got a result a reader believes."""
    marker = tmp_path / "crash-now"
    marker.touch()
    with fault_env(tmp_path, max_deliveries=1, concurrency=1) as env:
        env.start_executors("ex-a")
        rid = env.submit("crash", extra_vars={"crash_marker": str(marker)})
        victim = env.proc("ex-a")
        wait_for(lambda: victim.proc.poll() is not None, 120, "delivery 1 to kill ex-a")
        key = env.config.events_key(rid)
        write_plain(env.r, key, _forged_success(rid))
        write_batch(env.r, key, [_forged_success(rid)])  # a made-up signature
        env.start_executors("ex-b")  # delivery 2 is past the max: dead-lettered
        result = wait_for(
            lambda: env.run_client(lambda c: c.last_result(rid)), 120, "a verified result"
        )
        assert result.status == "error" and result.executor == "ex-b", result
        assert "delivered 2 times (max 1)" in (result.error or "")
        assert "result.unverified" in env.proc("ex-b").output()
        tail = env.deployctl("tail", rid, "--json")
        assert tail.returncode == 1, (tail.stdout, tail.stderr)
        lines = [json.loads(ln) for ln in tail.stdout.splitlines()]
        assert [e["status"] for e in lines if e["type"] == "result"] == ["error"]
        assert sum(1 for e in lines if e["type"] == "unverified") == 2


def test_a_forged_result_does_not_make_cancel_refuse(tmp_path: Path) -> None:
    """Before: ``deployctl cancel`` answered "already finished" to a planted result."""
    with fault_env(tmp_path) as env:
        rid = env.submit("quick")  # queued: no executor runs
        key = env.config.events_key(rid)
        write_plain(env.r, key, _forged_success(rid))
        write_batch(env.r, key, [_forged_success(rid)])
        out = env.deployctl("cancel", rid)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "already finished" not in out.stdout
        assert _types(env.r, key)[-1] == b"cancel_requested"
        # A genuine result still makes it refuse (the cancel was not a result).
        signer = ExecutorKeys.load(env.keys_dir).signer
        genuine = msgspec.structs.replace(_forged_success(rid), status="failed")
        write_batch(env.r, key, [genuine], signer)
        write_plain(env.r, key, _forged_success(rid))  # a planted one above it
        again = env.deployctl("cancel", rid)
        assert "already finished" in again.stdout, (again.stdout, again.stderr)
        assert _types(env.r, key).count(b"cancel_requested") == 1


@pytest.mark.slow
@pytest.mark.parametrize("copied_to", ["events and control", "control"])
def test_a_copy_of_a_genuine_cancel_does_not_cancel_a_later_run(
    tmp_path: Path, copied_to: str
) -> None:
    """Before: a cancel's signature covered its stream and data only, so a copy of a
    genuine one re-added later -- on the request's stream after a ``dlq replay``
    started a new generation, or on the control stream while that run ran -- still
    cancelled. Now it is signed for the entry id it was written under."""
    with fault_env(tmp_path, concurrency=1) as env:
        rid = env.submit("sleep", extra_vars={"sleep_s": 3})  # queued: no executor yet
        out = env.deployctl("cancel", rid)
        assert out.returncode == 0, (out.stdout, out.stderr)
        key = env.config.events_key(rid)
        control = env.config.streams.control
        [(_, genuine)] = [(i, f) for i, f in env.r.xrange(key) if f[b"type"] == b"cancel_requested"]
        [(_, broadcast)] = env.r.xrange(control)
        # A new generation of the same request, as `dlq replay` writes it, and the
        # attacker's copy of the cancel in it.
        [(_, submitted)] = env.r.xrange(key, count=1)
        env.r.xadd(key, submitted)
        if copied_to == "events and control":
            env.r.xadd(key, genuine)
        env.start_executors("ex-a")
        wait_for(lambda: any(isinstance(e, TaskStarted) for e in env.events(rid)), 60, "the run")
        env.r.xadd(control, broadcast)  # ... and of the broadcast, while it runs
        result = env.wait_result(rid)
        assert result.status == "success", (result, env.logs())
        copies = 2 if copied_to == "events and control" else 1
        assert env.proc("ex-a").output().count("cancel.unverified") >= copies, env.logs()
        tail = env.deployctl("tail", rid, "--json")
        lines = [json.loads(ln) for ln in tail.stdout.splitlines()]
        assert tail.returncode == 0, (tail.stdout, tail.stderr)
        unverified = [e["claimed"] for e in lines if e["type"] == "unverified"]
        assert unverified == ["cancel_requested"] * (copies - 1), lines
