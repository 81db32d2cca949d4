"""Issue 3 end to end: `deployctl deploy` through the graph, the orchestrator service,
and an orchestrator install that carries no Ansible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from contracts import Accepted, Result, StreamsConfig, encode
from contracts.requests import DeployRequest
from deploystream.embedded_redis import free_port
from deploystream.sample_service import create_sample_repo, stop_service
from tests.graph_support import GithubStandIn, recorder
from tests.harness import (
    DEPLOYCTL,
    Executors,
    cli_env,
    deployctl,
    read_events,
    wait_for_result,
)

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = Path(__file__).parent / "ansible"
pytestmark = pytest.mark.slow


def _json(body: object, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


@pytest.fixture
def apps(executors: Executors):
    yield executors.apps_root
    if executors.apps_root.is_dir():
        for app in executors.apps_root.iterdir():
            stop_service(app)


def _post_deploy_options(httpserver: HTTPServer, github: GithubStandIn) -> list[str]:
    """The platform API and the GitHub stand-in, as `deploy` and `retry` take them."""
    return [
        "--api-url",
        httpserver.url_for("/").rstrip("/"),
        "--github-repo",
        "acme/shop",
        "--github-api-url",
        github.api_url,
        "--github-token",
        "ghp_" + "t" * 36,
    ]


def test_deploy_cli_runs_graph_and_post_deploy(
    executors: Executors,
    apps: Path,
    httpserver: HTTPServer,
    redis_url: str,
    keys_dir: Path,
    tmp_path: Path,
    rclient: redis.Redis,
    config: StreamsConfig,
) -> None:
    executors.start("ex-a")
    github = GithubStandIn(httpserver, repo="acme/shop")
    github.serve()
    records: list[object] = []
    patches: list[object] = []
    calls = {"records": 0}

    def record(request: Request) -> Response:
        calls["records"] += 1
        if calls["records"] <= 2:  # 500 twice, then 201: retried
            return _json({"detail": "try again"}, 500)
        return recorder(records, lambda: _json({"id": 9}, 201))(request)

    httpserver.expect_request("/api/service-deployments/", method="POST").respond_with_handler(
        record
    )
    httpserver.expect_request("/api/projects/42", method="GET").respond_with_json(
        {"id": 42, "name": "shop"}
    )
    httpserver.expect_request("/api/projects/42", method="PATCH").respond_with_handler(
        recorder(patches, lambda: _json({"id": 42}, 200))
    )
    port = free_port()
    repo = create_sample_repo(tmp_path / "repo")
    out = deployctl(
        "deploy",
        "--project",
        "shop",
        "--project-id",
        "42",
        "--repo",
        repo,
        "--service-port",
        str(port),
        "--secret",
        "GREETING=hi",
        "--json",
        *_post_deploy_options(httpserver, github),
        redis_url=redis_url,
        keys_dir=keys_dir,
        DEPLOYSTREAM_CHECKPOINT_DB=str(tmp_path / "cp.sqlite"),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    types = [line["type"] for line in lines]
    assert types[0] == "submitted"
    result_at = types.index("result")
    assert "host_result" in types[:result_at] and "task_started" in types[:result_at]
    seqs = [line["seq"] for line in lines[: result_at + 1] if line["seq"] > 0]
    assert seqs == list(range(1, len(seqs) + 1))
    post = {line["name"]: line for line in lines[result_at + 1 :] if line["type"] == "post_deploy"}
    assert set(post) == {"deployment_record", "github_secrets", "project_status"}
    assert all(p["status"] == "ok" for p in post.values()), post
    assert calls["records"] == 3
    body = records[0]
    assert isinstance(body, dict)
    assert body["project"] in (42, "42") or body.get("project_id") in (42, "42")
    assert body["status"] == "running" and body["port"] == port
    assert patches == [{"status": "active"}]
    assert github.put["DEPLOY_HOST"] == "localhost"
    assert github.put["DEPLOY_PORT"] == str(port)
    assert set(github.put) >= {"DEPLOY_HOST", "DEPLOY_USER", "DEPLOY_PROJECT_PATH", "DEPLOY_PORT"}
    # One job reached the executors.
    assert rclient.xlen(config.streams.deploy) == 1


def test_deploy_cli_api_down_after_deploy_reports_and_exits_1(
    executors: Executors,
    apps: Path,
    httpserver: HTTPServer,
    redis_url: str,
    keys_dir: Path,
    tmp_path: Path,
    rclient: redis.Redis,
    config: StreamsConfig,
) -> None:
    executors.start("ex-a")
    httpserver.expect_request("/api/projects/42", method="GET").respond_with_json(
        {"id": 42, "name": "shop"}
    )
    httpserver.expect_request("/api/service-deployments/", method="POST").respond_with_data(
        "down", status=503
    )
    patches: list[object] = []
    httpserver.expect_request("/api/projects/42", method="PATCH").respond_with_handler(
        recorder(patches, lambda: _json({"id": 42}, 200))
    )
    out = deployctl(
        "deploy",
        "--project-id",
        "42",
        "--repo",
        create_sample_repo(tmp_path / "repo"),
        "--service-port",
        str(free_port()),
        "--json",
        "--api-url",
        httpserver.url_for("/").rstrip("/"),
        redis_url=redis_url,
        keys_dir=keys_dir,
        DEPLOYSTREAM_HTTP_ATTEMPTS="2",
        DEPLOYSTREAM_CHECKPOINT_DB=str(tmp_path / "cp.sqlite"),
    )
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    result = next(line for line in lines if line["type"] == "result")
    assert result["status"] == "success"  # the deployment itself stands
    post = {line["name"]: line for line in lines if line["type"] == "post_deploy"}
    assert post["deployment_record"]["status"] == "failed"
    assert "503" in post["deployment_record"]["detail"] or post["deployment_record"]["detail"]
    assert out.stderr.strip()  # a clear error in plain words
    # Not rolled back, not repeated: one job, one accepted, one result.
    assert rclient.xlen(config.streams.deploy) == 1
    events = read_events(rclient, config, result["request_id"])
    assert sum(isinstance(e, Accepted) for e in events) == 1


def test_deploy_cli_missing_inputs_exit_2(
    redis_url: str, keys_dir: Path, tmp_path: Path, rclient: redis.Redis, config: StreamsConfig
) -> None:
    env = {"DEPLOYSTREAM_CHECKPOINT_DB": str(tmp_path / "cp.sqlite")}
    for args, words in (
        (["--repo", "https://x.org/a.git", "--service-port", "8000"], "--project"),
        (["--project", "p", "--service-port", "8000"], "--repo"),
        (["--project", "p", "--repo", "https://x.org/a.git"], "--service-port"),
    ):
        out = deployctl("deploy", *args, redis_url=redis_url, keys_dir=keys_dir, **env)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert words in out.stderr and "nothing submitted" in out.stderr
    assert rclient.exists(config.streams.deploy) == 0


def test_retry_of_a_deploy_runs_the_graph_with_post_deploy(
    executors: Executors,
    apps: Path,
    httpserver: HTTPServer,
    redis_url: str,
    keys_dir: Path,
    tmp_path: Path,
    rclient: redis.Redis,
    config: StreamsConfig,
) -> None:
    """A deploy fails (its ref does not exist yet); ``retry`` of it, once the ref
    exists, succeeds *and* records the deployment, sets the CI secrets and marks the
    project active, with the same ``post_deploy`` lines as ``deploy --json``."""
    executors.start("ex-a")
    github = GithubStandIn(httpserver, repo="acme/shop")
    github.serve()
    records: list[object] = []
    patches: list[object] = []
    httpserver.expect_request("/api/service-deployments/", method="POST").respond_with_handler(
        recorder(records, lambda: _json({"id": 11}, 201))
    )
    httpserver.expect_request("/api/projects/42", method="PATCH").respond_with_handler(
        recorder(patches, lambda: _json({"id": 42}, 200))
    )
    repo_dir = tmp_path / "repo"
    repo = create_sample_repo(repo_dir)
    port = free_port()
    first = deployctl(
        "deploy",
        "--project",
        "shop",
        "--project-id",
        "42",
        "--repo",
        repo,
        "--ref",
        "release-1",
        "--service-port",
        str(port),
        "--detach",
        redis_url=redis_url,
        keys_dir=keys_dir,
    )
    assert first.returncode == 0, first.stderr
    rid = first.stdout.strip()
    failed = [e for e in wait_for_result(rclient, config, rid) if isinstance(e, Result)]
    assert failed[-1].status == "failed", failed
    subprocess.run(["git", "-C", str(repo_dir), "branch", "release-1"], check=True)

    out = deployctl(
        "retry",
        rid[:8],
        "--json",
        *_post_deploy_options(httpserver, github),
        redis_url=redis_url,
        keys_dir=keys_dir,
        DEPLOYSTREAM_CHECKPOINT_DB=str(tmp_path / "cp.sqlite"),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    result = next(line for line in lines if line["type"] == "result")
    assert result["status"] == "success" and result["request_id"] != rid
    post = {line["name"]: line for line in lines if line["type"] == "post_deploy"}
    assert {name: p["status"] for name, p in post.items()} == {
        "deployment_record": "ok",
        "github_secrets": "ok",
        "project_status": "ok",
    }
    (body,) = records
    assert isinstance(body, dict) and body["port"] == port
    assert body["deployment_info"]["request_id"] == result["request_id"]
    assert body["deployment_info"]["ref"] == "release-1"
    assert patches == [{"status": "active"}]
    assert github.put["DEPLOY_PORT"] == str(port)
    submitted = read_events(rclient, config, result["request_id"])[0]
    assert submitted.job.retry_of == rid  # type: ignore[attr-defined]


def test_cli_env_keeps_a_config_passed_in_and_drops_an_inherited_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEPLOYSTREAM_CONFIG", "/inherited/streams.toml")
    assert "DEPLOYSTREAM_CONFIG" not in cli_env("redis://x", tmp_path)
    mine = str(tmp_path / "streams.toml")
    assert cli_env("redis://x", tmp_path, DEPLOYSTREAM_CONFIG=mine)["DEPLOYSTREAM_CONFIG"] == mine


def _orchestrator(
    name: str,
    redis_url: str,
    keys_dir: Path,
    base: Path,
    cfg: Path,
) -> tuple[subprocess.Popen[bytes], Path]:
    log = base / f"{name}.log"
    env = cli_env(redis_url, keys_dir, DEPLOYSTREAM_CONFIG=str(cfg))
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [
                DEPLOYCTL,
                "orchestrator",
                "--name",
                name,
                "--checkpoint-db",
                str(base / "shared-checkpoints.sqlite"),
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while "orchestrator.started" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc, log


def test_orchestrators_share_requests_and_adopt_after_kill(
    executors: Executors,
    redis_url: str,
    keys_dir: Path,
    tmp_path: Path,
    rclient: redis.Redis,
    config: StreamsConfig,
) -> None:
    executors.project_dir = ANSIBLE_DIR
    executors.start("ex-a", "--concurrency", "4")
    cfg = tmp_path / "streams.toml"
    text = (ROOT / "streams.toml").read_text()
    text = text.replace("lease-ms = 30000", "lease-ms = 1500").replace(
        "reclaim-interval-ms = 5000", "reclaim-interval-ms = 300"
    )
    cfg.write_text(text)
    procs = dict(
        o1=_orchestrator("o1", redis_url, keys_dir, tmp_path, cfg),
        o2=_orchestrator("o2", redis_url, keys_dir, tmp_path, cfg),
    )
    try:
        ids = [f"req-{i}-{os.getpid()}" for i in range(3)]
        for rid in ids:
            req = DeployRequest(
                request_id=rid,
                project_name=f"svc{rid[4]}",
                repo="https://example.org/acme/svc.git",
                service_port=8000,
                playbook="sleep",
                extra_vars={"sleep_s": 6},
            )
            rclient.xadd(config.streams.requests, {"request": encode(req)})
        victim = ids[0]
        deadline = time.monotonic() + 60
        owner = None
        while owner is None and time.monotonic() < deadline:
            events = read_events(rclient, config, victim)
            if any(isinstance(e, Accepted) for e in events):
                pending = rclient.xpending_range(
                    config.streams.requests, config.groups.orchestrators, "-", "+", 10
                )
                for p in pending:
                    entry = rclient.xrange(
                        config.streams.requests, p["message_id"], p["message_id"]
                    )
                    if victim.encode() in entry[0][1][b"request"]:
                        owner = p["consumer"].decode()
            time.sleep(0.1)
        assert owner in procs, owner
        os.killpg(procs[owner][0].pid, 9)
        procs[owner][0].wait(10)
        survivor = "o2" if owner == "o1" else "o1"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (
                rclient.xpending(config.streams.requests, config.groups.orchestrators)["pending"]
                == 0
            ):
                break
            time.sleep(0.2)
        log = procs[survivor][1].read_text()
        assert (
            rclient.xpending(config.streams.requests, config.groups.orchestrators)["pending"] == 0
        ), log
        assert "request.adopted" in log
        for rid in ids:
            events = read_events(rclient, config, rid)
            results = [e for e in events if isinstance(e, Result)]
            assert len(results) == 1 and results[0].status == "success", events
            assert sum(isinstance(e, Accepted) for e in events) == 1
        # Exactly one job per request reached the executors.
        jobs = rclient.xrange(config.streams.deploy)
        assert len(jobs) == len(ids)
        # Both orchestrators took part.
        started = {name: procs[name][1].read_text().count("request.started") for name in procs}
        assert all(n > 0 for n in started.values()), started
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(10)


def test_orchestrator_install_carries_no_ansible(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(uv).exists(), "uv is installed by the Makefile (.tools/bin/uv)"
    reqs = tmp_path / "requirements.txt"
    subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--no-hashes",
            "--extra",
            "orchestrator",
            "--no-dev",
            "--no-emit-project",
            "-o",
            str(reqs),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(py), "-r", str(reqs)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(py), "--no-deps", str(ROOT)],
        check=True,
        capture_output=True,
    )
    for cmd in (["deploy", "--help"], ["tail", "--help"]):
        out = subprocess.run(
            [str(venv / "bin" / "deployctl"), *cmd], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert "Usage" in out.stdout
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u; print(u.find_spec('ansible'), "
            "u.find_spec('ansible_runner'), u.find_spec('langgraph') is not None)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["None", "None", "True"]
