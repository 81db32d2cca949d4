"""Helpers for the orchestrator graph tests: a scripted JobGateway and GitHub stand-in.

``ScriptedGateway`` is the graph's seam (``orchestrator.gateway.JobGateway``), not a
fake Redis: it replays contract events with small delays, like a tailing client would.
The GitHub stand-in serves PyGithub's real paths over real HTTP (pytest-httpserver).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from nacl.public import PrivateKey, SealedBox
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from contracts import Accepted, DeployJob, Event, HostResult, Job, Result, Submitted, TaskStarted
from orchestrator.settings import OrchestratorSettings


def script(job: DeployJob, status: str = "success", *, error: str | None = None) -> list[Event]:
    rid, now = job.request_id, time.time()
    return [
        Submitted(request_id=rid, seq=0, ts=now, job=job, stream="ansible.deploy"),
        Accepted(request_id=rid, seq=1, ts=now, executor="ex-1"),
        TaskStarted(request_id=rid, seq=2, ts=now, task="Fetch repository", host="localhost"),
        HostResult(request_id=rid, seq=3, ts=now, host="localhost", task="Fetch", status="ok"),
        Result(
            request_id=rid,
            seq=4,
            ts=now,
            status=status,  # type: ignore[arg-type]
            deployed_url="http://localhost:8000" if status == "success" else None,
            error=error,
            event_count=4,
            failed_task="Start service" if status != "success" else None,
        ),
    ]


def make_settings(tmp_path: Path, **changes: Any) -> OrchestratorSettings:
    base: dict[str, Any] = {
        "checkpoint_db": tmp_path / "state" / "checkpoints.sqlite",
        "queue_allowance_s": 5.0,
        "checkpoint_every_s": 0.5,
        "final_read_s": 0.1,
        "http_attempts": 3,
        "http_timeout_s": 5.0,
        "retry_wait_initial_s": 0.01,
        "retry_wait_max_s": 0.05,
        "github_write_interval_s": 0,
    }
    return OrchestratorSettings(**(base | changes))


@dataclass
class ScriptedGateway:
    """Submits into memory; ``events`` replays the request's script from ``after``."""

    status: str = "success"
    error: str | None = None
    delay: float = 0.01
    hang_before_result: bool = False  # never deliver the result (wait-bound tests)
    redis_clock_skew: float = 0.0  # Redis's clock minus this machine's
    crash_on_tail: int | None = None  # the n-th events() call raises (crash while tailing)
    before_result: anyio.Event | None = None  # hold the result until this is set
    submitted: list[DeployJob] = field(default_factory=list)
    tails: list[tuple[str, str]] = field(default_factory=list)
    scripts: dict[str, list[Event]] = field(default_factory=dict)

    async def submit(self, job: Job) -> str:
        assert isinstance(job, DeployJob)
        self.submitted.append(job)
        self.scripts.setdefault(job.request_id, script(job, self.status, error=self.error))
        return job.request_id

    def add(self, job: DeployJob) -> None:
        """Make a request known without submitting it (it was submitted before a crash)."""
        self.scripts.setdefault(job.request_id, script(job, self.status, error=self.error))

    async def events(self, request_id: str, after: str = "0") -> AsyncIterator[tuple[str, Event]]:
        self.tails.append((request_id, after))
        if self.crash_on_tail == len(self.tails):
            raise RuntimeError("orchestrator crashed while tailing")
        start = 0 if after == "0" else int(after.split("-")[0])
        for index, event in enumerate(self.scripts[request_id], start=1):
            if index <= start:
                continue
            if isinstance(event, Result):
                if self.hang_before_result:
                    await anyio.sleep_forever()
                if self.before_result is not None:
                    await self.before_result.wait()
            await anyio.sleep(self.delay)
            yield f"{index}-0", event

    async def cancel(self, request_id: str, reason: str = "") -> bool:
        return True

    async def redis_time(self) -> float:
        """Redis's clock, as the gateway reports it (``redis_clock_skew`` from local)."""
        return time.time() + self.redis_clock_skew


@dataclass
class GithubStandIn:
    """GitHub's REST paths PyGithub 2.10 calls, for one repository, over real HTTP."""

    server: HTTPServer
    repo: str = "acme/shop"
    box: PrivateKey = field(default_factory=PrivateKey.generate)
    put: dict[str, str] = field(default_factory=dict)  # name -> decrypted value
    auth_headers: list[str] = field(default_factory=list)
    put_failures: int = 0  # answer this many PUTs with 502 first

    @property
    def api_url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def serve(self) -> None:
        base = f"/repos/{self.repo}"
        self.server.expect_request(base, method="GET").respond_with_handler(self._repo)
        self.server.expect_request(
            f"{base}/actions/secrets/public-key", method="GET"
        ).respond_with_json({"key_id": "568250167242549743", "key": self._public_b64()})
        for _ in range(self.put_failures):
            self.server.expect_oneshot_request(
                f"{base}/actions/secrets/DEPLOY_HOST", method="PUT"
            ).respond_with_json({"message": "Bad gateway"}, status=502)
        self.server.expect_request(
            re.compile(rf"^{re.escape(base)}/actions/secrets/[A-Z0-9_]+$"), method="PUT"
        ).respond_with_handler(self._put_secret)

    def serve_app(self, installation_id: int, token: str) -> None:
        self.server.expect_request(
            f"/repos/{self.repo}/installation", method="GET"
        ).respond_with_json({"id": installation_id, "app_id": 1, "account": {"login": "acme"}})
        self.server.expect_request(
            f"/app/installations/{installation_id}/access_tokens", method="POST"
        ).respond_with_json(
            {"token": token, "expires_at": "2099-01-01T00:00:00Z", "permissions": {}},
            status=201,
        )

    def _public_b64(self) -> str:
        return base64.b64encode(bytes(self.box.public_key)).decode()

    def _repo(self, request: Request) -> Response:
        self.auth_headers.append(request.headers.get("Authorization", ""))
        owner, name = self.repo.split("/")
        body = {
            "id": 1,
            "name": name,
            "full_name": self.repo,
            "owner": {"login": owner},
            "url": self.server.url_for(f"/repos/{self.repo}"),
        }
        return Response(json.dumps(body), status=200, content_type="application/json")

    def _put_secret(self, request: Request) -> Response:
        self.auth_headers.append(request.headers.get("Authorization", ""))
        name = request.path.rsplit("/", 1)[-1]
        payload = request.get_json()
        assert payload["key_id"] == "568250167242549743"
        sealed = base64.b64decode(payload["encrypted_value"])
        self.put[name] = SealedBox(self.box).decrypt(sealed).decode()
        return Response("", status=201)


def json_body(request: Request) -> Any:
    return json.loads(request.get_data(as_text=True))


def recorder(into: list[Any], response: Callable[[], Response]) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        into.append(json_body(request) if request.get_data() else None)
        return response()

    return handler
