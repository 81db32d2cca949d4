"""Contracts: round trips, schema evolution, strict config, rules."""

from __future__ import annotations

import time

import msgspec
import pytest

from contracts import (
    Accepted,
    ConfigError,
    DecodeError,
    DeployJob,
    HostResult,
    HostStats,
    ProvisionJob,
    Result,
    RuleError,
    Submitted,
    Target,
    Waiting,
    check_job,
    decode_event,
    decode_job,
    encode,
    load_config,
    with_overrides,
)
from contracts.config import parse_config


def _deploy(**kw: object) -> DeployJob:
    base: dict[str, object] = dict(
        request_id="r1",
        submitted_at=1.0,
        playbook="deploy_service",
        project_name="svc",
        repo="https://example.org/a/b.git",
    )
    base.update(kw)
    return msgspec.convert(base, DeployJob)


def test_job_round_trip_keeps_every_field() -> None:
    job = _deploy(
        secrets={"DB": "c2VhbGVk"},
        env={"A": "1"},
        target={"host": "10.0.0.5"},
        modules=["api"],
        limit=["10.0.0.5"],
    )
    again = decode_job(encode(job))
    assert again == job
    assert isinstance(again, DeployJob)
    assert again.target == Target(host="10.0.0.5")


def test_union_dispatches_on_kind() -> None:
    job = ProvisionJob(
        request_id="p1", submitted_at=1.0, playbook="provision_server", server_handle="srv-1"
    )
    assert isinstance(decode_job(encode(job)), ProvisionJob)
    assert b'"kind":"provision"' in encode(job)


def test_event_round_trip_all_kinds() -> None:
    job = _deploy()
    events = [
        Submitted(request_id="r1", seq=0, ts=1.0, job=job, stream="ansible.deploy"),
        Accepted(request_id="r1", seq=1, ts=1.0, executor="e1"),
        HostResult(request_id="r1", seq=2, ts=1.0, host="h", task="t", status="changed"),
        Waiting(request_id="r1", seq=2, ts=1.0, lock="project a on localhost", holder="r0"),
        Result(
            request_id="r1",
            seq=3,
            ts=1.0,
            status="success",
            event_count=3,
            stats={"h": HostStats(ok=1, changed=1)},
        ),
    ]
    for ev in events:
        assert decode_event(encode(ev)) == ev


def test_old_payloads_still_decode() -> None:
    """A v0.1 job (before limit/health_path/env existed) and a v0.1 result decode."""
    old_job = (
        b'{"kind":"deploy","request_id":"old1","submitted_at":1.5,'
        b'"playbook":"deploy_service","project_name":"svc","repo":"owner/name"}'
    )
    job = decode_job(old_job)
    assert isinstance(job, DeployJob)
    assert job.limit == [] and job.health_path == "/health" and job.env == {}
    assert job.expires_at is None  # decodes; executors refuse it (no signed expiry)
    old_submitted = (
        b'{"type":"submitted","request_id":"old1","seq":0,"ts":1.5,"job":' + old_job + b"}"
    )
    sub = decode_event(old_submitted)
    assert isinstance(sub, Submitted) and sub.job_sig == "" and sub.job_kid == ""
    old_result = b'{"type":"result","request_id":"old1","seq":4,"ts":2.0,"status":"failed"}'
    res = decode_event(old_result)
    assert isinstance(res, Result) and res.status == "failed" and res.event_count == 0
    assert res.hosts == {}  # per-host summaries came later
    assert job.serial is None and job.max_fail_percent is None
    old_provision = (
        b'{"kind":"provision","request_id":"old2","submitted_at":1.5,'
        b'"playbook":"provision_server","server_handle":"s1"}'
    )
    prov = decode_job(old_provision)
    assert isinstance(prov, ProvisionJob) and not prov.accept_new_host_key
    # The first ``waiting`` events had only ``lock``: what came later has defaults.
    first_waiting = b'{"type":"waiting","request_id":"old1","seq":2,"ts":2.0,"lock":"x"}'
    waiting = decode_event(first_waiting)
    assert isinstance(waiting, Waiting) and waiting.holder is None and not waiting.queued
    # A streams.toml from before the job lock still loads, with its defaults.
    old = parse_config('[streams]\ndeploy = "ansible.deploy"\n[executor]\nlease-ms = 5000\n')
    assert old.streams.locks_prefix == "deploystream.lock" and old.executor.lock_poll_ms == 250


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "malformed"),
        (b'{"kind":"nuke","request_id":"x"}', "nuke"),
        (b'{"kind":"deploy","request_id":"x"}', "missing required field"),
        (
            b'{"kind":"deploy","request_id":"x","submitted_at":"yesterday","playbook":"p",'
            b'"project_name":"a","repo":"b/c"}',
            "Expected `float`",
        ),
        (
            b'{"kind":"deploy","request_id":"x","submitted_at":1,"playbook":"../etc/passwd",'
            b'"project_name":"a","repo":"b/c"}',
            "playbook",
        ),
    ],
)
def test_bad_jobs_fail_with_a_reason(payload: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_job(payload)
    assert fragment.lower() in str(info.value).lower()


def test_rules_reject_dangerous_inputs() -> None:
    with pytest.raises(RuleError, match="ansible_connection"):
        check_job(_deploy(extra_vars={"ansible_connection": "local"}))
    with pytest.raises(RuleError, match="become"):
        check_job(_deploy(extra_vars={"become_user": "root"}))
    with pytest.raises(RuleError, match="file://"):
        check_job(_deploy(repo="file:///srv/repo"), allow_file_repos=False)
    with pytest.raises(RuleError, match="characters"):
        check_job(_deploy(repo="https://x.org/a;rm -rf /"))
    with pytest.raises(RuleError, match="scheme"):
        check_job(_deploy(repo="ftp://x.org/a"))
    check_job(_deploy(repo="file:///srv/repo"), allow_file_repos=True)
    check_job(_deploy(repo="owner/name", extra_vars={"feature_flag": True}))
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"host": "a;b"}, Target)


def test_config_defaults_and_keys() -> None:
    cfg = load_config()
    assert cfg.streams.deploy == "ansible.deploy"
    assert cfg.events_key("abc") == "ansible.events:{abc}"
    assert cfg.dead_key(cfg.streams.deploy) == "ansible.deploy.dead"
    assert with_overrides(cfg, redis_url="redis://h:1/2").redis.url == "redis://h:1/2"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[executor]\nleese-ms = 5\n", "leese-ms"),
        ("[executor]\nlease-ms = 5\n", "lease-ms"),
        ("[streams]\ndeploy = 'has space'\n", "deploy"),
        ("[nope]\n", "nope"),
        ("[executor\n", "TOML"),
    ],
)
def test_config_errors_name_the_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert fragment in str(info.value)


def test_config_file_missing(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/streams.toml")


def test_submitted_at_is_a_timestamp() -> None:
    job = _deploy(submitted_at=time.time())
    assert decode_job(encode(job)).submitted_at == job.submitted_at
