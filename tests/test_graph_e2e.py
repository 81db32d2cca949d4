"""The deploy graph against the real thing: Redis, an executor process, ansible-runner.

The platform API is a local HTTP stand-in; everything else is real, including the
service the playbook starts (it must answer with the secret greeting).
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from contracts import Event, HostResult, Result, StreamsConfig, Submitted
from deploystream.keys import OrchestratorKeys
from deploystream.redis_conn import connect
from deploystream.sample_service import create_sample_repo, stop_service
from orchestrator.client import StreamClient
from orchestrator.run import run_deploy_graph
from tests.graph_support import make_settings, recorder
from tests.harness import Executors

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def started(executors: Executors) -> Iterator[Executors]:
    executors.start("ex-graph")
    yield executors
    if executors.apps_root.is_dir():
        for app in executors.apps_root.iterdir():
            stop_service(app)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_graph_deploys_for_real(
    started: Executors,
    config: StreamsConfig,
    keys_dir: Path,
    tmp_path: Path,
    httpserver: HTTPServer,
) -> None:
    records: list[Any] = []
    patches: list[Any] = []
    from werkzeug import Response

    httpserver.expect_request("/api/service-deployments/", method="POST").respond_with_handler(
        recorder(records, lambda: Response('{"id": 1}', 201, content_type="application/json"))
    )
    httpserver.expect_request("/api/projects/9", method="GET").respond_with_json(
        {"id": 9, "name": "sample", "runtime": "process"}
    )
    httpserver.expect_request("/api/projects/9", method="PATCH").respond_with_handler(
        recorder(patches, lambda: Response("{}", 200, content_type="application/json"))
    )
    repo = create_sample_repo(tmp_path / "repo")
    port = _free_port()
    settings = make_settings(
        tmp_path, api_url=httpserver.url_for("/"), apps_root=str(started.apps_root)
    )
    keys = OrchestratorKeys.load(keys_dir)
    events: list[Event] = []
    redis = connect(config.redis.url)
    try:
        final = await run_deploy_graph(
            {
                "project": {"id": "9", "name": "sample"},
                "repo": repo,
                "service_port": port,
                "timeout_s": 120,
                "modules": ["web"],
            },
            gateway=StreamClient(redis, config, keys, name="graph-test"),
            keys=keys,
            settings=settings,
            secrets={"GREETING": "hello from the graph"},
            on_event=events.append,
        )
    finally:
        await redis.aclose()

    assert final["outcome"] == "success", (final.get("errors"), started.procs[0].output())
    assert isinstance(events[0], Submitted) and isinstance(events[-1], Result)
    assert any(isinstance(e, HostResult) for e in events)
    assert final["events_seen"] == len(events)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert json.loads(resp.read())["greeting"] == "hello from the graph"
    (record,) = records
    assert record["url"] == f"http://localhost:{port}"
    assert record["deployment_info"]["project_dir"] == str(started.apps_root / "sample")
    assert record["deployment_info"]["request_id"] == final["request_id"]
    assert patches == [{"status": "active"}]
