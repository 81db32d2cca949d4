"""The deploy graph end to end, with a scripted gateway and a real SQLite checkpointer."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from contracts import Event, Job, Waiting
from deploystream.errors import BadInputError
from deploystream.keys import ExecutorKeys, OrchestratorKeys
from executor.unseal import open_secrets
from orchestrator.checkpoint import open_checkpointer
from orchestrator.errors import CheckpointConfigError
from orchestrator.graph import build_deploy_graph
from orchestrator.run import UnknownThreadError, open_deploy_graph, resume_graph, run_deploy_graph
from orchestrator.state import DeployContext, DeployState, exit_code
from tests.graph_support import ScriptedGateway, make_settings

pytestmark = pytest.mark.anyio

REQUEST: DeployState = {
    "project": {"name": "shop"},
    "repo": "file:///srv/git/shop.git",
    "timeout_s": 30,
    "service_port": 8000,
    "env": {"MODE": "prod"},
}


async def _resume(
    thread_id: str,
    *,
    gateway: Any,
    keys: OrchestratorKeys,
    settings: Any,
    on_event: Any = None,
) -> Any:
    """A new process carrying on a checkpointed thread (what the service does)."""
    async with open_deploy_graph(gateway=gateway, keys=keys, settings=settings) as graph:
        return await resume_graph(graph, thread_id, settings=settings, on_event=on_event)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keys(keys_dir: Path) -> OrchestratorKeys:
    return OrchestratorKeys.load(keys_dir)


async def test_events_reach_the_custom_stream_live(tmp_path: Path, keys: OrchestratorKeys) -> None:
    # The result is held back until the consumer has seen progress: if events were
    # buffered until the node returns, this would deadlock and fail_after would fire.
    shown = anyio.Event()
    gateway = ScriptedGateway(before_result=shown)
    graph = build_deploy_graph(gateway=gateway, keys=keys, settings=make_settings(tmp_path))
    seen: list[str] = []
    updates: list[str] = []
    with anyio.fail_after(10):
        async for mode, chunk in graph.astream(
            {**REQUEST, "request_id": "live-1", "secret_names": []},
            {"configurable": {"thread_id": "live-1"}},
            context=DeployContext(),
            stream_mode=["custom", "updates"],
        ):
            item: Any = chunk
            if mode == "custom":
                seen.append(item["type"])
                if item["type"] == "host_result":
                    assert "post_deploy" not in updates
                    shown.set()
            else:
                updates.extend(item)
    assert seen == ["submitted", "accepted", "task_started", "host_result", "result"]
    assert updates[:3] == ["prepare", "submit", "deployer"]
    assert updates[-1] == "post_deploy"


async def test_run_seals_secrets_and_keeps_them_off_disk(
    tmp_path: Path, keys: OrchestratorKeys, keys_dir: Path
) -> None:
    gateway = ScriptedGateway()
    settings = make_settings(tmp_path)
    events: list[Event] = []
    final = await run_deploy_graph(
        REQUEST,
        gateway=gateway,
        keys=keys,
        settings=settings,
        secrets={"DB_PASSWORD": "hunter2-plaintext"},
        thread_id="req-seal",
        on_event=events.append,
    )
    assert final["outcome"] == "success" and exit_code(final) == 0
    assert [type(e).__name__ for e in events] == [
        "Submitted",
        "Accepted",
        "TaskStarted",
        "HostResult",
        "Result",
    ]
    assert final["request_id"] == "req-seal" and final["last_event_id"] == "5-0"
    assert final["result"] is not None and final["result"]["status"] == "success"
    # No integration configured: every post-deploy step says skipped, none is hidden.
    assert [(o["name"], o["status"]) for o in final["post_deploy"]] == [
        ("deployment_record", "skipped"),
        ("github_secrets", "skipped"),
        ("project_status", "skipped"),
    ]
    (job,) = gateway.submitted
    assert job.request_id == "req-seal" and job.idempotency_key == "req-seal"
    assert job.env == {"MODE": "prod"}
    # Sealed together with its binding: the executor opens it for this job only.
    opened = open_secrets(ExecutorKeys.load(keys_dir), job)
    assert opened.values["DB_PASSWORD"] == "hunter2-plaintext"
    assert final["secret_names"] == ["DB_PASSWORD"]
    for path in settings.checkpoint_db.parent.iterdir():
        assert b"hunter2-plaintext" not in path.read_bytes()
    assert settings.checkpoint_db.stat().st_mode & 0o077 == 0


async def test_wait_is_bounded_by_timeout_plus_queue_allowance(
    tmp_path: Path, keys: OrchestratorKeys
) -> None:
    gateway = ScriptedGateway(hang_before_result=True)
    settings = make_settings(tmp_path, queue_allowance_s=0.6, checkpoint_every_s=0.25)
    started = time.monotonic()
    with anyio.fail_after(15):
        final = await run_deploy_graph(
            {**REQUEST, "timeout_s": 1},
            gateway=gateway,
            keys=keys,
            settings=settings,
            thread_id="req-slow",
        )
    elapsed = time.monotonic() - started
    assert 1.6 <= elapsed < 5
    assert final["outcome"] == "wait_exceeded" and exit_code(final) == 1
    assert final.get("result") is None
    (error,) = final["errors"]
    assert "req-slow" in error and "`deployctl cancel req-slow`" in error
    # Progress was checkpointed slice by slice: later tails start after the last event.
    assert final["last_event_id"] == "4-0"
    assert gateway.tails[0] == ("req-slow", "0") and len(gateway.tails) >= 3
    assert gateway.tails[-1] == ("req-slow", "4-0")
    assert final["post_deploy"] == [
        {"name": "project_status", "status": "skipped", "detail": "platform API not configured"}
    ]


class _WaitingGateway(ScriptedGateway):
    """After ``accepted``: a ``waiting`` event, then the result only once released."""

    async def submit(self, job: Job) -> str:
        rid = await super().submit(job)
        submitted, accepted, *_, result = self.scripts[rid]
        wait = Waiting(request_id=rid, seq=2, ts=time.time(), lock="project p on localhost")
        self.scripts[rid] = [submitted, accepted, wait, result]
        return rid


async def test_a_wait_for_the_project_lock_does_not_count_against_the_bound(
    tmp_path: Path, keys: OrchestratorKeys
) -> None:
    released = anyio.Event()
    gateway = _WaitingGateway(before_result=released)
    settings = make_settings(tmp_path, queue_allowance_s=0.6, checkpoint_every_s=0.25)
    started = time.monotonic()

    async def release_later() -> None:
        await anyio.sleep(3)  # twice the bound (timeout 1 s + allowance 0.6 s)
        released.set()

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_later)
            final = await run_deploy_graph(
                {**REQUEST, "timeout_s": 1},
                gateway=gateway,
                keys=keys,
                settings=settings,
                thread_id="req-waits",
            )
    assert time.monotonic() - started >= 3
    assert final.get("outcome") != "wait_exceeded", final.get("errors")
    result = final.get("result")
    assert result is not None and result["status"] == "success"


@pytest.mark.parametrize("crash_on_tail", [1, 2])
async def test_resume_after_crash_tails_the_same_request(
    tmp_path: Path, keys: OrchestratorKeys, crash_on_tail: int
) -> None:
    settings = make_settings(tmp_path, checkpoint_every_s=0.3)
    held = anyio.Event()  # never set: the first process never sees the result
    first = ScriptedGateway(before_result=held, crash_on_tail=crash_on_tail, delay=0.02)
    with pytest.raises(RuntimeError, match="crashed while tailing"):
        await run_deploy_graph(
            REQUEST, gateway=first, keys=keys, settings=settings, thread_id="req-crash"
        )
    assert len(first.submitted) == 1
    saved_after = first.tails[-1][1]
    assert saved_after == ("0" if crash_on_tail == 1 else "4-0")

    # A new process: same checkpoint file and thread id; the request already exists.
    second = ScriptedGateway()
    second.add(first.submitted[0])
    events: list[Event] = []
    final = await _resume(
        "req-crash", gateway=second, keys=keys, settings=settings, on_event=events.append
    )
    assert second.submitted == []
    assert second.tails == [("req-crash", saved_after)]
    assert final["outcome"] == "success" and final["request_id"] == "req-crash"
    assert events[-1].request_id == "req-crash"

    # Running the same thread again returns the finished state: one id, one deploy.
    third = ScriptedGateway()
    again = await run_deploy_graph(
        REQUEST, gateway=third, keys=keys, settings=settings, thread_id="req-crash"
    )
    assert third.submitted == [] and third.tails == []
    assert again["outcome"] == "success"


async def test_resume_of_unknown_thread_is_an_error(tmp_path: Path, keys: OrchestratorKeys) -> None:
    with pytest.raises(UnknownThreadError):
        await _resume(
            "nope", gateway=ScriptedGateway(), keys=keys, settings=make_settings(tmp_path)
        )


async def test_failure_reports_error_status(
    tmp_path: Path, keys: OrchestratorKeys, httpserver: HTTPServer
) -> None:
    patches: list[Any] = []

    def patch(request: Request) -> Response:
        patches.append(request.get_json())
        return Response("{}", status=200, content_type="application/json")

    httpserver.expect_request("/api/projects/42", method="GET").respond_with_json(
        {
            "id": 42,
            "name": "shop",
            "repo_url": "file:///srv/git/shop.git",
            "branch": "release",
            "port": 8000,
        }
    )
    httpserver.expect_request("/api/projects/42", method="PATCH").respond_with_handler(patch)
    gateway = ScriptedGateway(status="failed", error="health check failed: HTTP 503")
    settings = make_settings(tmp_path, api_url=httpserver.url_for("/"))
    final = await run_deploy_graph(
        {"project": {"id": "42"}}, gateway=gateway, keys=keys, settings=settings, thread_id="r-f"
    )
    # prepare filled name, repo and ref from the API.
    (job,) = gateway.submitted
    assert (job.project_name, job.repo, job.ref, job.project_id) == (
        "shop",
        "file:///srv/git/shop.git",
        "release",
        "42",
    )
    assert final["outcome"] == "deploy_failed" and exit_code(final) == 1
    (body,) = patches
    assert body["status"] == "error"
    assert "health check failed: HTTP 503" in body["status_reason"]
    assert "r-f" in body["status_reason"]
    assert final["post_deploy"] == [
        {"name": "project_status", "status": "ok", "detail": "project 42 marked error"}
    ]
    httpserver.check_assertions()


async def test_bad_input_submits_nothing(tmp_path: Path, keys: OrchestratorKeys) -> None:
    gateway = ScriptedGateway()
    final = await run_deploy_graph(
        {"project": {"name": "shop"}},
        gateway=gateway,
        keys=keys,
        settings=make_settings(tmp_path),
        thread_id="r-bad",
    )
    assert gateway.submitted == [] and gateway.tails == []
    assert final["outcome"] == "bad_input" and exit_code(final) == 2
    assert "no repository" in final["errors"][0]
    bad_host = await run_deploy_graph(
        {**REQUEST, "host": "a;rm -rf /"},
        gateway=gateway,
        keys=keys,
        settings=make_settings(tmp_path),
        thread_id="r-bad-host",
    )
    assert bad_host["outcome"] == "bad_input" and gateway.submitted == []


async def test_unknown_project_and_unreachable_api_submit_nothing(
    tmp_path: Path, keys: OrchestratorKeys, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/api/projects/404").respond_with_json(
        {"detail": "Not found."}, status=404
    )
    httpserver.expect_request("/api/projects/500").respond_with_data("boom", status=500)
    gateway = ScriptedGateway()
    settings = make_settings(tmp_path, api_url=httpserver.url_for("/"))
    missing = await run_deploy_graph(
        {"project": {"id": "404"}}, gateway=gateway, keys=keys, settings=settings, thread_id="a"
    )
    assert missing["outcome"] == "bad_input"
    assert "HTTP 404" in missing["errors"][0] and "Not found." in missing["errors"][0]
    down = await run_deploy_graph(
        {"project": {"id": "500"}}, gateway=gateway, keys=keys, settings=settings, thread_id="b"
    )
    assert down["outcome"] == "unavailable" and exit_code(down) == 3
    assert gateway.submitted == []
    calls = [req.path for req, _ in httpserver.log]
    assert calls.count("/api/projects/404") == 1  # a 4xx is not retried
    assert calls.count("/api/projects/500") == settings.http_attempts


async def test_resumed_run_before_submit_refuses_without_its_secrets(
    tmp_path: Path, keys: OrchestratorKeys
) -> None:
    settings = make_settings(tmp_path)
    gateway = ScriptedGateway()
    async with open_checkpointer(settings) as saver:
        graph = build_deploy_graph(
            gateway=gateway, keys=keys, settings=settings, checkpointer=saver
        )
        config: Any = {"configurable": {"thread_id": "r-sec"}}
        # Stop before prepare ran, as if the process died right after accepting the request.
        await graph.aupdate_state(
            config, {**REQUEST, "request_id": "r-sec", "secret_names": ["DB_PASSWORD"]}
        )
    final = await _resume("r-sec", gateway=gateway, keys=keys, settings=settings)
    assert final["outcome"] == "bad_input" and gateway.submitted == []
    assert "secrets (DB_PASSWORD) are not available" in final["errors"][0]


# PostgreSQL is one of the services this machine kind starts (trust auth on loopback).
PG_DSN = os.environ.get("DEPLOYSTREAM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def test_postgres_checkpointer_resumes_without_resubmitting(
    tmp_path: Path, keys: OrchestratorKeys
) -> None:
    settings = make_settings(tmp_path, checkpoint_dsn=PG_DSN)
    thread = f"pg-{uuid.uuid4().hex}"
    gateway = ScriptedGateway()
    final = await run_deploy_graph(
        REQUEST, gateway=gateway, keys=keys, settings=settings, thread_id=thread
    )
    assert final["outcome"] == "success", final
    again = await run_deploy_graph(
        REQUEST, gateway=gateway, keys=keys, settings=settings, thread_id=thread
    )
    assert again["request_id"] == thread and len(gateway.submitted) == 1
    async with open_checkpointer(settings) as saver:
        stored = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    assert stored is not None


async def test_postgres_checkpointer_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    from deploystream.embedded_redis import free_port

    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nope?connect_timeout=2"
    settings = make_settings(tmp_path, checkpoint_dsn=dsn)
    with pytest.raises(CheckpointConfigError, match="Postgres checkpoint database"):
        async with open_checkpointer(settings):
            pass


async def test_submit_refused_ends_with_bad_input(tmp_path: Path, keys: OrchestratorKeys) -> None:
    class Refusing(ScriptedGateway):
        async def submit(self, job: Job) -> str:
            raise BadInputError("no executor serves playbook 'deploy_service'")

    gateway = Refusing()
    final = await run_deploy_graph(
        REQUEST, gateway=gateway, keys=keys, settings=make_settings(tmp_path), thread_id="r-ref"
    )
    assert final["outcome"] == "bad_input" and exit_code(final) == 2
    assert "no executor serves playbook" in final["errors"][0]
    assert gateway.tails == [] and not final.get("submitted")


async def test_the_projects_servers_are_the_hosts_when_the_request_names_none(
    tmp_path: Path, keys: OrchestratorKeys, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/api/projects/7", method="GET").respond_with_json(
        {
            "id": 7, "name": "shop", "repo_url": "owner/shop", "port": 8000,
            "servers": ["deploy@198.18.0.2", "198.18.0.3:2222", {"host": "web-3", "user": "ops"}],
        }
    )  # fmt: skip
    httpserver.expect_request("/api/projects/7", method="PATCH").respond_with_json({})
    gateway = ScriptedGateway()
    settings = make_settings(tmp_path, api_url=httpserver.url_for("/"))
    await run_deploy_graph(
        {"project": {"id": "7"}}, gateway=gateway, keys=keys, settings=settings, thread_id="r-s"
    )
    (job,) = gateway.submitted
    assert (job.target.host, job.target.port, job.target.user) == ("198.18.0.2", 22, "deploy")
    assert [(t.host, t.port, t.user) for t in job.hosts] == [
        ("198.18.0.3", 2222, None),
        ("web-3", 22, "ops"),
    ]
    # a host given with the request wins over the project's list
    gateway = ScriptedGateway()
    await run_deploy_graph(
        {"project": {"id": "7"}, "host": "other"},
        gateway=gateway, keys=keys, settings=settings, thread_id="r-s2",
    )  # fmt: skip
    (job,) = gateway.submitted
    assert job.target.host == "other" and job.hosts == []
