"""What a job may set, and who runs it (issue 11, points 5 and 6), with real executors.

- Extra vars a playbook does not declare are refused at submit (exit 2, nothing
  submitted) and, should one get past that, dead-lettered by the executor.
- An executor without playbooks refuses to start; a job that reaches an executor
  lacking its playbook is handed to one that has it (not dead-lettered, its delivery
  not counted), and dead-lettered only when no live executor offers it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts import Accepted, Result, StreamsConfig, TaskStarted
from tests.harness import DEPLOYCTL, Executors, cli_env, deployctl, read_events, wait_for_result
from tests.test_pipeline import _submit as submit_job

ANSIBLE_DIR = Path(__file__).parent / "ansible"
DEPLOY_ARGS = ("deploy", "--project", "p", "--repo", "https://github.com/o/r.git")


def _submit(
    rclient: redis.Redis, config: StreamsConfig, keys_dir: Path, playbook: str, **extra: Any
) -> str:
    return submit_job(rclient, config, keys_dir, playbook, extra_vars=extra, timeout_s=120)


def _dead_letters(rclient: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in rclient.xrange(f"{stream}.dead")]


def _wait_event(
    rclient: redis.Redis, config: StreamsConfig, rid: str, match: Callable[[Any], bool]
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(match(e) for e in read_events(rclient, config, rid)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no matching event for {rid}")


def _result(events: list[Any]) -> Result:
    results = [e for e in events if isinstance(e, Result)]
    assert len(results) == 1, events
    return results[0]


# ---------------------------------------------------------------- point 5


@pytest.mark.slow
def test_extra_vars_the_playbook_does_not_declare_are_refused_at_submit(
    executors: Executors, rclient: redis.Redis, redis_url: str, keys_dir: Path
) -> None:
    executors.start("ex-a")  # the built-in playbooks: deploy_service declares nothing
    for var in ("app_dir=/tmp/elsewhere", "env_file=/tmp/env", "web_cmd=id", "health_retries=1"):
        out = deployctl(
            *DEPLOY_ARGS,
            "--service-port",
            "8123",
            "--detach",
            "--extra-var",
            var,
            redis_url=redis_url,
            keys_dir=keys_dir,
        )
        name = var.partition("=")[0]
        assert out.returncode == 2, (var, out.stdout, out.stderr)
        assert f"--extra-var '{name}' is not declared by playbook 'deploy_service'" in out.stderr
        assert "it accepts no extra vars" in out.stderr
        assert "deploy_service.vars.toml" in out.stderr
        assert "Traceback" not in out.stderr
    # provision_server declares three: an undeclared one is refused, listing them.
    out = deployctl(
        "provision", "--server", "s1", "--detach", "--extra-var", "marker_file=/etc/passwd",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "'marker_file' is not declared by playbook 'provision_server'" in out.stderr
    assert "allowed: create_deploy_user (bool), provision_version (str)" in out.stderr
    # A declared one with a value outside its type or limits is refused too.
    out = deployctl(
        "provision", "--server", "s1", "--detach", "--extra-var", "create_deploy_user=maybe",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "--extra-var create_deploy_user: 'maybe' is not true or false" in out.stderr
    # Nothing reached a job stream.
    assert rclient.xlen("ansible.deploy") == 0
    assert rclient.xlen("ansible.provision") == 0


@pytest.mark.slow
def test_declared_vars_are_converted_to_their_type_and_reach_the_playbook(
    executors: Executors, redis_url: str, keys_dir: Path
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a")
    out = deployctl(
        "provision", "--server", "s1", "--playbook", "sleep", "--extra-var", "sleep_s=0.2",
        "--json", redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    out = deployctl(
        "provision", "--server", "s1", "--playbook", "sleep", "--extra-var", "sleep_s=soon",
        redis_url=redis_url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--extra-var sleep_s: 'soon' is not float" in out.stderr


@pytest.mark.slow
def test_the_executor_dead_letters_extra_vars_its_playbook_does_not_declare(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    # Submitted while no executor announces anything (the submit side cannot check).
    bad = _submit(rclient, config, keys_dir, "sleep", app_dir="/tmp/elsewhere")
    good = _submit(rclient, config, keys_dir, "sleep", sleep_s=0)
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a")
    refused = _result(wait_for_result(rclient, config, bad))
    assert refused.status == "rejected"
    assert refused.error is not None
    assert "extra var 'app_dir' is not declared by playbook 'sleep'" in refused.error
    assert "allowed: sleep_s (float 0..3600)" in refused.error
    dead = _dead_letters(rclient, "ansible.provision")
    assert len(dead) == 1
    assert b"'app_dir' is not declared by playbook 'sleep'" in dead[0][b"reason"]
    assert _result(wait_for_result(rclient, config, good)).status == "success"


# ---------------------------------------------------------------- point 6


def test_an_executor_without_playbooks_refuses_to_start(
    tmp_path: Path, redis_url: str, keys_dir: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (bad / "site.vars.toml").write_text('[vars.apps_root]\ntype = "str"\n')
    for project_dir, words in (
        (empty, f"project dir {empty} has no playbooks"),
        (bad, "apps_root: set by the executor"),
    ):
        out = subprocess.run(
            [DEPLOYCTL, "executor", "--name", "ex-x", "--project-dir", str(project_dir)],
            env=cli_env(redis_url, keys_dir),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert words in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_job_reaching_an_executor_without_its_playbook_runs_on_one_that_has_it(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    # ex-tests has the test playbooks (one slot), ex-builtin only the built-in ones.
    executors.start("ex-tests", "--concurrency", "1", "--project-dir", str(ANSIBLE_DIR))
    executors.start("ex-builtin")
    busy = _submit(rclient, config, keys_dir, "sleep", sleep_s=3)
    _wait_event(rclient, config, busy, lambda e: isinstance(e, TaskStarted) and e.task == "Sleep")
    # ex-tests is full, so the group delivers these to ex-builtin, which lacks "quick".
    quick = [_submit(rclient, config, keys_dir, "quick") for _ in range(2)]
    for rid in [busy, *quick]:
        events_of = wait_for_result(rclient, config, rid)
        result = _result(events_of)
        assert result.status == "success", result
        assert result.executor == "ex-tests"
        accepted = [e for e in events_of if isinstance(e, Accepted)]
        # Handed over, not adopted: one attempt, its delivery not counted again.
        assert [(a.executor, a.attempt, a.delivery_count) for a in accepted] == [("ex-tests", 1, 1)]
    assert _dead_letters(rclient, "ansible.provision") == []
    handed = executors.procs[1].output().count("job.handed_over")
    assert handed == 2, executors.procs[1].output()[-3000:]


@pytest.mark.slow
def test_a_job_no_live_executor_offers_is_dead_lettered_with_that_reason(
    executors: Executors, rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    rid = _submit(rclient, config, keys_dir, "quick")  # no executor announces anything yet
    executors.start("ex-builtin")
    result = _result(wait_for_result(rclient, config, rid))
    assert result.status == "rejected"
    assert result.error is not None
    assert "no live executor offers playbook 'quick'" in result.error
    dead = _dead_letters(rclient, "ansible.provision")
    assert len(dead) == 1
    assert b"no live executor offers playbook 'quick'" in dead[0][b"reason"]
    assert [e for e in read_events(rclient, config, rid) if isinstance(e, Accepted)] == []


def test_every_submit_path_refuses_what_live_executors_would_refuse(
    rclient: redis.Redis, config: StreamsConfig, keys_dir: Path
) -> None:
    """StreamClient.submit checks too, so the graph, the orchestrator service (platform
    requests) and retry are refused like the CLI: nothing reaches a job stream."""
    from contracts.playbook_vars import encode_offers, parse_declaration
    from deploystream.errors import BadInputError
    from deploystream.keys import ExecutorKeys
    from deploystream.proofs import sign_presence

    # A live executor as the submit side sees one: a consumer of the group with a
    # presence hash advertising its playbooks and their declarations.
    sleep_vars = parse_declaration((ANSIBLE_DIR / "sleep.vars.toml").read_text(), "sleep")
    for stream in config.job_streams:
        rclient.xgroup_create(stream, config.groups.executors, id="0", mkstream=True)
        rclient.xgroup_createconsumer(stream, config.groups.executors, "ex-a")
    presence = {
        "name": "ex-a",
        "state": "running",
        "playbooks": "sleep,quick",
        "vars": encode_offers({"sleep": sleep_vars}).decode(),
    }
    # Signed by the executors' key, as an executor writes it (issue 19).
    key = config.executor_key("ex-a")
    signer = ExecutorKeys.load(keys_dir).signer
    rclient.hset(key, mapping=sign_presence(signer, key, presence))
    rclient.expire(config.executor_key("ex-a"), 60)
    for playbook, extra, words in (
        ("sleep", {"app_dir": "/tmp/x"}, "extra var 'app_dir' is not declared by playbook 'sleep'"),
        ("sleep", {"sleep_s": "1; id"}, "extra var sleep_s: expected a number"),
        ("provision_server", {}, "playbook: unknown playbook 'provision_server'"),
    ):
        with pytest.raises(BadInputError) as caught:
            _submit(rclient, config, keys_dir, playbook, **extra)
        assert words in str(caught.value), str(caught.value)
    assert rclient.xlen("ansible.provision") == 0
    assert _submit(rclient, config, keys_dir, "sleep", sleep_s=1)
    assert rclient.xlen("ansible.provision") == 1
