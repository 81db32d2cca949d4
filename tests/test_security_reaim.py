"""Signed means *this request*: sealed secrets and ``retry`` cannot be re-aimed.

- A sealed value carries its binding (kind, project, repo, name) inside the box
  (:mod:`contracts.sealing`). Copied out of one project's job into another job (an
  attacker's project and repository, as the orchestrator service would sign it for
  a platform request carrying pre-sealed values), it is refused by the executor with
  the reason, and never reaches the attacker's code. So is a value moved to another
  name, the clone token moved into a secret's place, and a bare (unbound) value.
- ``deployctl retry`` signs only a job this orchestrator signed: a ``submitted``
  event written by anyone else under a chosen request id is refused, nothing is
  submitted; a genuine retry says which project and repo it re-signs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import redis

from contracts import DeployJob, StreamsConfig, Submitted, decode_event, decode_job, encode
from contracts.sealing import deploy_binding, unbind
from deploystream.keys import ExecutorKeys, OrchestratorKeys
from deploystream.redis_conn import connect
from executor import intake
from executor.settings import ExecutorSettings
from orchestrator.client import StreamClient
from orchestrator.job_builder import build_deploy_job, build_provision_job
from tests.harness import Executors, deployctl, wait_for_result

ANSIBLE_DIR = Path(__file__).parent / "ansible"
DEPLOY = "ansible.deploy"
VICTIM_REPO = "https://github.com/acme/billing.git"
ATTACKER_REPO = "https://github.com/mallory/app.git"


def _victim(keys: OrchestratorKeys, **kw: Any) -> DeployJob:
    return build_deploy_job(
        keys,
        project_name="billing",
        repo=VICTIM_REPO,
        playbook="exfiltrate",
        secrets={"DB_PASSWORD": "hunter2-billing"},
        **kw,
    )


def _attacker(keys: OrchestratorKeys, loot: Path, **kw: Any) -> DeployJob:
    return build_deploy_job(
        keys, project_name="mallory", repo=ATTACKER_REPO, playbook="exfiltrate",
        extra_vars={"loot": str(loot)}, **kw,
    )  # fmt: skip


def _examine(keys_dir: Path, job: DeployJob) -> intake.Accepted | intake.Rejected:
    okeys = OrchestratorKeys.load(keys_dir)
    job = msgspec.structs.replace(job, expires_at=time.time() + 3600)
    payload = encode(job)
    fields = {
        b"job": payload,
        b"sig": okeys.sign(DEPLOY, payload).encode(),
        b"kid": okeys.kid.encode(),
    }
    settings = ExecutorSettings(name="t", project_dir=ANSIBLE_DIR, allow_file_repos=False)
    return intake.examine(DEPLOY, fields, ExecutorKeys.load(keys_dir), settings)


def _submit(config: StreamsConfig, keys_dir: Path, job: DeployJob) -> str:
    async def go() -> str:
        r = connect(config.redis.url)
        try:
            return await StreamClient(r, config, OrchestratorKeys.load(keys_dir)).submit(job)
        finally:
            await r.aclose()

    return anyio.run(go)


# ---------------------------------------------------------------- sealed secrets


def test_each_sealed_value_is_refused_anywhere_but_its_own_binding(keys_dir: Path) -> None:
    keys = OrchestratorKeys.load(keys_dir)
    victim = _victim(keys, github_token="ghs_victim-token")
    stolen = victim.secrets["DB_PASSWORD"]
    loot = keys_dir / "loot"
    cases = {
        "another project and repo": _attacker(keys, loot, sealed_secrets={"DB_PASSWORD": stolen}),
        "the same project, another repo": build_deploy_job(
            keys, project_name="billing", repo=ATTACKER_REPO, playbook="exfiltrate",
            sealed_secrets={"DB_PASSWORD": stolen},
        ),
        "another name": build_deploy_job(
            keys, project_name="billing", repo=VICTIM_REPO, playbook="exfiltrate",
            sealed_secrets={"LOG_LEVEL": stolen},
        ),
        "the clone token as a secret": build_deploy_job(
            keys, project_name="billing", repo=VICTIM_REPO, playbook="exfiltrate",
            sealed_secrets={"TOKEN": victim.github_token or ""},
        ),
        "a bare value (no binding)": build_deploy_job(
            keys, project_name="billing", repo=VICTIM_REPO, playbook="exfiltrate",
            sealed_secrets={"DB_PASSWORD": keys.seal("hunter2-billing")},
        ),
    }  # fmt: skip
    provision = build_provision_job(keys, server_handle="srv-1", secrets={"ROOT_PW": "x"})
    cases["a provision secret in a deploy"] = _attacker(
        keys, loot, sealed_secrets={"ROOT_PW": provision.secrets["ROOT_PW"]}
    )
    for what, job in cases.items():
        verdict = _examine(keys_dir, job)
        assert isinstance(verdict, intake.Rejected), what
        assert verdict.reason.startswith("secrets: "), (what, verdict.reason)
        assert "hunter2" not in verdict.reason
    # The genuine job passes, and "owner/name" is the same repo as its clone URL.
    assert isinstance(_examine(keys_dir, victim), intake.Accepted)
    short = build_deploy_job(
        keys, project_name="billing", repo="acme/billing", playbook="exfiltrate",
        sealed_secrets={"DB_PASSWORD": stolen},
    )  # fmt: skip
    assert isinstance(_examine(keys_dir, short), intake.Accepted)
    # What the platform seals with (its own copy of the binding rules) opens the same.
    opened = ExecutorKeys.load(keys_dir).open(stolen)
    assert unbind(opened, deploy_binding("billing", "acme/billing", "DB_PASSWORD")) == (
        "hunter2-billing"
    )


@pytest.mark.slow
def test_copied_sealed_secret_is_refused_by_the_executor_and_never_reaches_the_attacker(
    executors: Executors,
    rclient: redis.Redis,
    config: StreamsConfig,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex0")
    keys = OrchestratorKeys.load(keys_dir)
    stolen = _victim(keys).secrets["DB_PASSWORD"]  # read off the job stream or its events

    # The attacker's project, with the victim's sealed value: signed as the service
    # would sign a platform request that carries pre-sealed values.
    loot = tmp_path / "loot.json"
    rid = _submit(config, keys_dir, _attacker(keys, loot, sealed_secrets={"DB_PASSWORD": stolen}))
    result = wait_for_result(rclient, config, rid)[-1]
    assert result.status == "rejected", result  # type: ignore[union-attr]
    error = result.error or ""  # type: ignore[union-attr]
    assert error.startswith("secrets: DB_PASSWORD: sealed for another request"), error
    [(_, dead)] = rclient.xrange(config.dead_key(config.streams.deploy))
    assert dead[b"reason"].decode() == error
    assert not loot.exists()

    # Control: the same code with a secret sealed for it does take it (so above, the
    # refusal is what kept the password from it).
    own = _attacker(keys, loot, secrets={"DB_PASSWORD": "mallory-own"})
    result = wait_for_result(rclient, config, _submit(config, keys_dir, own))[-1]
    assert result.status == "success", result  # type: ignore[union-attr]
    assert "mallory-own" in loot.read_text()


# ---------------------------------------------------------------- retry


def _forge_submitted(
    rclient: redis.Redis, config: StreamsConfig, request_id: str, event: Submitted
) -> None:
    rclient.xadd(
        config.events_key(request_id), {"type": "submitted", "seq": 0, "data": encode(event)}
    )


def test_retry_signs_only_what_this_orchestrator_signed(
    rclient: redis.Redis, config: StreamsConfig, keys_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    keys = OrchestratorKeys.load(keys_dir)
    genuine_rid = _submit(config, keys_dir, _victim(keys))
    [(_, genuine_fields)] = rclient.xrange(config.events_key(genuine_rid), count=1)
    genuine = decode_event(genuine_fields[b"data"])
    assert isinstance(genuine, Submitted) and genuine.job_sig and genuine.job_kid

    # The attacker's job under a request id of its choosing: unsigned; carrying the
    # genuine signature over another job; and a genuine event copied under another id.
    mine = _attacker(keys, tmp_path / "loot", request_id="chosen-1")
    forged = {
        "chosen-1": Submitted(request_id="chosen-1", seq=0, ts=1.0, job=mine, stream=DEPLOY),
        "chosen-2": msgspec.structs.replace(
            genuine,
            request_id="chosen-2",
            job=msgspec.structs.replace(genuine.job, request_id="chosen-2", repo=ATTACKER_REPO),
        ),
        "chosen-3": msgspec.structs.replace(genuine, request_id="chosen-3"),
    }
    for rid, event in forged.items():
        _forge_submitted(rclient, config, rid, event)
        out = deployctl("retry", rid, "--detach", redis_url=redis_url, keys_dir=keys_dir)
        assert out.returncode == 2, (rid, out.stdout, out.stderr)
        assert "not a job this orchestrator signed" in out.stderr, (rid, out.stderr)
        assert "refusing to sign it again" in out.stderr and "Traceback" not in out.stderr
        assert rclient.xlen(DEPLOY) == 1, rid  # nothing submitted

    # A genuine retry goes through and says what it re-signs.
    out = deployctl("retry", genuine_rid, "--detach", redis_url=redis_url, keys_dir=keys_dir)
    assert out.returncode == 0, out.stderr
    assert f"project 'billing' from repo '{VICTIM_REPO}'" in out.stderr, out.stderr
    new_rid = out.stdout.strip()
    [_, (_, fields)] = rclient.xrange(DEPLOY)
    job = decode_job(fields[b"job"])
    assert job.request_id == new_rid and job.retry_of == genuine_rid
    assert job.expires_at is not None and job.expires_at > (genuine.job.expires_at or 0)
    ExecutorKeys.load(keys_dir).verify(
        DEPLOY, fields[b"job"], fields[b"sig"].decode(), fields[b"kid"].decode()
    )
