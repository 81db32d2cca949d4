"""Issue 20, points 3 and 4: a full Redis is back-pressure, an evicting one is refused.

Real ``redis-server`` processes with a small ``maxmemory`` (``noeviction``), filled
with unrelated keys and freed again; real executors and playbooks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest
import redis
from redis.exceptions import OutOfMemoryError
from structlog.testing import capture_logs

from contracts import (
    Accepted,
    HostResult,
    Reclaimed,
    TaskStarted,
    encode,
    load_config,
    with_overrides,
)
from contracts.requests import DeployRequest
from deploystream.embedded_redis import EmbeddedRedis
from deploystream.keys import ExecutorKeys
from deploystream.redis_conn import connect
from executor.ownership import Owned
from executor.settings import ExecutorSettings
from executor.worker import Executor
from tests.faults_support import fault_env, pids_matching, wait_for, wait_gone
from tests.harness import DEPLOYCTL, cli_env

MAXMEMORY = ["--maxmemory", "48mb", "--maxmemory-policy", "noeviction"]


def fill(r: redis.Redis) -> list[str]:
    """Unrelated keys until Redis refuses writes (out of memory); returns their names.

    Redis refuses a write only while it is *over* maxmemory, and a refused 256 KB
    write frees its buffer again; so maxmemory is then set 2 MB below what is used:
    every write is refused until the junk is deleted (:func:`free`).
    """
    junk: list[str] = []
    while True:
        name = f"junk:{len(junk)}"
        try:
            r.set(name, b"x" * 262_144)
        except OutOfMemoryError:
            break
        junk.append(name)
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used - 2 * 1024 * 1024)
    return junk


def free(r: redis.Redis, junk: list[str]) -> None:
    for i in range(0, len(junk), 100):
        r.delete(*junk[i : i + 100])


def _log_lines(text: str, event: str) -> int:
    return sum(1 for line in text.splitlines() if f'"event": "{event}"' in line)


# ------------------------------------------------------------------ evicting Redis
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_services_refuse_to_start_against_an_evicting_redis(
    policy: str, tmp_path: Path, keys_dir: Path
) -> None:
    with EmbeddedRedis(extra_args=["--maxmemory-policy", policy]) as server:
        for command in (["executor", "--work-dir", str(tmp_path / "w")], ["orchestrator"]):
            done = subprocess.run(
                [DEPLOYCTL, *command],
                env=cli_env(server.url, keys_dir),
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert done.returncode == 2, (command, done.returncode, done.stderr[-2000:])
            assert policy in done.stderr and "noeviction" in done.stderr
            assert "Traceback" not in done.stderr


@pytest.fixture
def full_redis() -> Iterator[tuple[EmbeddedRedis, redis.Redis]]:
    with EmbeddedRedis(extra_args=MAXMEMORY) as server:
        r = redis.Redis.from_url(server.url)
        try:
            yield server, r
        finally:
            r.close()


def test_deployctl_against_a_full_redis_exits_3_and_submits_nothing(
    full_redis: tuple[EmbeddedRedis, redis.Redis], keys_dir: Path
) -> None:
    server, r = full_redis
    fill(r)
    done = subprocess.run(
        [DEPLOYCTL, "provision", "--server", "s1", "--detach"],
        env=cli_env(server.url, keys_dir),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert "out of memory" in done.stderr and "Traceback" not in done.stderr
    assert r.xlen("ansible.provision") == 0


# ------------------------------------------------------------------ with executors
@pytest.mark.slow
def test_a_full_redis_pauses_publishing_and_the_run_is_seen_once(tmp_path: Path) -> None:
    with fault_env(tmp_path, lease_ms=3000, appendonly=False, redis_args=MAXMEMORY) as env:
        ex = env.start_executor("ex-a")
        rid = env.submit("sleep", extra_vars={"sleep_s": 4})
        env.wait_event(rid, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
        junk = fill(env.r)
        # The sleep ends while Redis refuses writes: its events wait, and it says why.
        wait_for(lambda: "redis.out_of_memory" in ex.output(), 60, "the executor to say so")
        free(env.r, junk)
        result = env.wait_result(rid)
        assert result.status == "success", (result, env.logs())
        events = env.events(rid)
        assert len(env.results(rid)) == 1
        assert len([e for e in events if isinstance(e, Accepted)]) == 1  # ran once
        assert not [e for e in events if isinstance(e, Reclaimed)]
        assert "handle.crashed" not in ex.output()
        assert ex.proc.poll() is None


@pytest.mark.slow
def test_a_run_whose_events_cannot_be_published_is_stopped(tmp_path: Path) -> None:
    with fault_env(
        tmp_path,
        lease_ms=3000,
        appendonly=False,
        redis_args=MAXMEMORY,
        extra_toml="publish-stall-s = 1.5\n",
    ) as env:
        ex = env.start_executor("ex-a")
        tag = f"unseen-{tmp_path.name}"
        rid = env.submit("ticks", extra_vars={"run_tag": tag})
        env.wait_event(rid, lambda e: isinstance(e, HostResult) and e.item)
        assert pids_matching(tag)
        junk = fill(env.r)
        # Redis still refuses writes, and the playbook is gone: it did not run on unseen.
        wait_gone(tag, timeout=60)
        with pytest.raises(OutOfMemoryError):
            env.r.set("probe", b"x" * 262_144)
        free(env.r, junk)
        result = env.wait_result(rid)
        assert result.status == "error", result
        assert result.error and "could not be published" in result.error
        assert len(env.results(rid)) == 1
        assert _log_lines(ex.output(), "job.stopped_unseen") == 1


@pytest.mark.slow
def test_an_executor_stops_taking_work_while_redis_may_evict(tmp_path: Path) -> None:
    with fault_env(
        tmp_path, appendonly=False, extra_toml="\n[redis]\ncheck-interval-s = 0.3\n"
    ) as env:
        ex = env.start_executor("ex-a")
        env.r.config_set("maxmemory-policy", "allkeys-lru")
        wait_for(lambda: "redis.evicting_policy" in ex.output(), 30, "the executor to notice")
        rid = env.submit("quick")
        seen = _log_lines(ex.output(), "redis.evicting_policy")
        # Three more checks, each refusing: the job was not taken meanwhile.
        wait_for(
            lambda: _log_lines(ex.output(), "redis.evicting_policy") >= seen + 3, 30, "3 checks"
        )
        # Only `submitted`: no executor started it (one read in flight when the policy
        # changed may hold it, unstarted, until the policy is fixed).
        assert len(env.events(rid)) == 1
        record = next(
            json.loads(line)
            for line in ex.output().splitlines()
            if '"event": "redis.evicting_policy"' in line
        )
        assert "allkeys-lru" in record["problem"]
        env.r.config_set("maxmemory-policy", "noeviction")
        assert env.wait_result(rid, timeout=60).status == "success"


def test_a_dead_letter_is_logged_only_once_written(
    full_redis: tuple[EmbeddedRedis, redis.Redis], keys_dir: Path
) -> None:
    """With Redis full, the dead-letter step waits (back-pressure) and says nothing
    about having dead-lettered; once memory is freed it is written, then logged."""
    server, r = full_redis
    config = with_overrides(load_config(), redis_url=server.url)
    stream, group = config.streams.provision, config.groups.executors
    r.xgroup_create(stream, group, id="0", mkstream=True)
    r.xadd(stream, {"job": b"not a job"})
    ((_, entries),) = r.xreadgroup(group, "ex-dl", {stream: ">"}, count=1)
    entry_id, fields = entries[0]
    junk = fill(r)

    async def go() -> list[dict[str, object]]:
        client = connect(server.url)
        settings = ExecutorSettings(name="ex-dl", project_dir=Path(__file__).parent / "ansible")
        ex = Executor(client, config, settings, ExecutorKeys.load(keys_dir))
        owned = Owned(stream, entry_id.decode(), delivery=1)
        try:
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        partial(
                            ex._dead_letter,
                            owned,
                            fields,
                            "bad entry",
                            None,
                            mode="rejected",
                            attempt_no=1,
                        )
                    )
                    with anyio.fail_after(30):  # it is retrying: Redis says out of memory
                        while not any(e["event"] == "redis.out_of_memory" for e in logs):
                            await anyio.sleep(0.05)
                    assert not any(e["event"] == "job.dead_lettered" for e in logs)
                    assert r.xlen(config.dead_key(stream)) == 0
                    free(r, junk)
            return list(logs)
        finally:
            await client.aclose()

    logs = anyio.run(go)
    assert [e["event"] for e in logs].count("job.dead_lettered") == 1
    assert r.xlen(config.dead_key(stream)) == 1


@pytest.mark.slow
def test_an_orchestrator_stops_taking_requests_while_redis_may_evict(
    tmp_path: Path, keys_dir: Path
) -> None:
    cfg = tmp_path / "streams.toml"
    cfg.write_text("[redis]\ncheck-interval-s = 0.3\n")
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        log = tmp_path / "o1.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                [DEPLOYCTL, "--config", str(cfg), "--log-level", "info", "orchestrator",
                 "--name", "o1", "--checkpoint-db", str(tmp_path / "checkpoints.sqlite")],
                env=cli_env(server.url, keys_dir),
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        try:
            text = lambda: log.read_text(errors="replace")  # noqa: E731
            wait_for(lambda: "orchestrator.started" in text(), 60, "the orchestrator to start")
            r.config_set("maxmemory-policy", "volatile-lru")
            wait_for(lambda: "redis.evicting_policy" in text(), 30, "the orchestrator to notice")
            request = DeployRequest(
                request_id=f"req-evict-{tmp_path.name}"[:60],
                project_name="svc",
                repo="https://example.org/acme/svc.git",
                service_port=8000,
            )
            r.xadd("deploy.requests", {"request": encode(request)})
            seen = _log_lines(text(), "redis.evicting_policy")
            wait_for(lambda: _log_lines(text(), "redis.evicting_policy") >= seen + 3, 30, "checks")
            # Not started (a read in flight when the policy changed may hold it, unstarted).
            assert "request.started" not in text()
            r.config_set("maxmemory-policy", "noeviction")
            wait_for(lambda: "request.started" in text(), 60, "the request to be taken")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            r.close()
