"""Signed means this request, once, now: captured job entries cannot be replayed.

An attacker with a Redis user that may add job entries (the orchestrator's) but no
signing key captures a genuine signed entry and adds it again, as is:

- after the request's events expired (the executors' dedupe, which reads them, has
  nothing to go on): it must not run again;
- at once after a forged ``submitted`` event (which makes the request look as if a
  new generation had started): it must not run again, i.e. no rollback to the
  version the captured job deploys;
- long after it was signed: a job past its signed expiry never runs (and a job
  with no signed expiry, from an older orchestrator, is refused).

Real executor processes, a real Redis, the captured fields XADDed again. The
playbook (``count_runs``) appends its tag to a file on every run, so "did not run"
is read from the side effect, not from our own events.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from contracts import Accepted, Result, decode_job, encode
from deploystream.keys import ExecutorKeys, OrchestratorKeys, init_keys
from executor import intake
from executor.settings import ExecutorSettings
from orchestrator.job_builder import build_provision_job
from tests.faults_support import ANSIBLE_DIR, FaultEnv, fault_env, wait_for

PROVISION = "ansible.provision"


def _submit(env: FaultEnv, runs_log: Path, tag: str) -> str:
    return env.submit("count_runs", extra_vars={"runs_log": str(runs_log), "run_tag": tag})


def _runs(runs_log: Path) -> list[str]:
    return runs_log.read_text().split() if runs_log.exists() else []


def _settled(env: FaultEnv, stream: str) -> bool:
    group = env.r.xinfo_groups(stream)[0]
    return bool(group["pending"] == 0 and group["lag"] == 0)


def _dead_reasons(env: FaultEnv, stream: str) -> list[str]:
    dead = env.r.xrange(env.config.dead_key(stream))
    return [fields[b"reason"].decode() for _, fields in dead]


@pytest.mark.slow
def test_captured_entry_added_again_after_its_events_expired_does_not_run(
    tmp_path: Path,
) -> None:
    runs_log = tmp_path / "runs.log"
    with fault_env(tmp_path, extra_toml="[retention]\nevents-ttl-s = 1\n") as env:
        env.start_executor("ex-a")
        rid = _submit(env, runs_log, "v1")
        assert env.wait_result(rid).status == "success"
        stream = env.config.streams.provision
        [(_, captured)] = env.r.xrange(stream)
        # The request's events expire for real (events-ttl-s after the result).
        events_key = env.config.events_key(rid)
        wait_for(lambda: not env.r.exists(events_key), 30, "the events to expire")

        env.r.xadd(stream, captured)
        wait_for(lambda: _settled(env, stream), 60, "the copy to be handled")

        assert _runs(runs_log) == ["v1"]  # ran once, not twice
        [reason] = _dead_reasons(env, stream)
        assert reason.startswith("replay:"), reason
        assert not env.r.exists(events_key)  # nothing published for a replay


@pytest.mark.slow
def test_captured_entry_added_again_after_a_forged_submitted_does_not_roll_back(
    tmp_path: Path,
) -> None:
    runs_log = tmp_path / "runs.log"
    with fault_env(tmp_path) as env:
        env.start_executor("ex-a")
        old = _submit(env, runs_log, "v1")
        assert env.wait_result(old).status == "success"
        stream = env.config.streams.provision
        [(_, captured)] = env.r.xrange(stream)
        new = _submit(env, runs_log, "v2")
        assert env.wait_result(new).status == "success"
        assert _runs(runs_log) == ["v1", "v2"]
        before = env.events(old)

        # A fresh `submitted` event (the old one, copied) makes the old request look
        # not yet run, then the captured entry goes in at once.
        events_key = env.config.events_key(old)
        [(_, submitted)] = env.r.xrange(events_key, count=1)
        env.r.xadd(events_key, submitted)
        env.r.xadd(stream, captured)
        wait_for(lambda: _settled(env, stream), 60, "the copy to be handled")

        assert _runs(runs_log) == ["v1", "v2"]  # no rollback to v1
        [reason] = _dead_reasons(env, stream)
        assert reason.startswith("replay:"), reason
        after = env.events(old)
        assert after[: len(before)] == before and len(after) == len(before) + 1  # the forgery
        assert not any(isinstance(e, Accepted | Result) for e in after[len(before) :])


@pytest.mark.slow
def test_job_past_its_signed_expiry_is_dead_lettered_not_run(tmp_path: Path) -> None:
    runs_log = tmp_path / "runs.log"
    toml = "[retention]\njob-validity-s = 1\nclock-skew-s = 0\n"
    with fault_env(tmp_path, extra_toml=toml) as env:
        rid = _submit(env, runs_log, "stale")  # no executor yet: it waits in the queue
        stream = env.config.streams.provision
        [(_, fields)] = env.r.xrange(stream)
        job = decode_job(fields[b"job"])
        # Stamped on Redis's clock, inside the signature.
        expires_at = job.expires_at
        assert expires_at is not None

        def redis_now() -> float:
            seconds, micros = cast(tuple[int, int], env.r.time())
            return seconds + micros / 1_000_000

        assert expires_at - redis_now() <= 1
        wait_for(lambda: redis_now() > expires_at, 10, "the job to expire")

        env.start_executor("ex-a")
        result = env.wait_result(rid)
        assert result.status == "rejected"
        assert result.error is not None and result.error.startswith("expired:"), result.error
        wait_for(lambda: _settled(env, stream), 30, "the entry to be dead-lettered")
        [reason] = _dead_reasons(env, stream)
        assert reason.startswith("expired:"), reason
        assert _runs(runs_log) == []
        assert not any(isinstance(e, Accepted) for e in env.events(rid))


def test_a_job_without_a_signed_expiry_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path)
    okeys = OrchestratorKeys.load(tmp_path)
    job = build_provision_job(okeys, server_handle="srv", playbook="quick")
    assert job.expires_at is None  # as an older orchestrator signed it
    payload = encode(job)
    fields = {b"job": payload, b"sig": okeys.sign(PROVISION, payload).encode()}
    fields[b"kid"] = okeys.kid.encode()
    settings = ExecutorSettings(name="t", project_dir=ANSIBLE_DIR, allow_file_repos=False)
    verdict = intake.examine(PROVISION, fields, ExecutorKeys.load(tmp_path), settings)
    assert isinstance(verdict, intake.Rejected)
    assert verdict.reason.startswith("rule: the job carries no signed expiry"), verdict.reason
