"""Post-deploy over real HTTP: the platform API and GitHub stood in by pytest-httpserver.

PyGithub talks to the stand-in as ``base_url``; the Actions secrets it seals with the
repository key are decrypted here to prove their values.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_httpserver import HTTPServer
from werkzeug import Response

from contracts.rules import token_applies
from deploystream.keys import ExecutorKeys, OrchestratorKeys
from executor.unseal import open_secrets
from orchestrator.errors import PlatformApiRejected, PlatformApiUnavailable, SettingsError
from orchestrator.platform_api import PlatformApi
from orchestrator.run import run_deploy_graph
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployState, exit_code
from tests.graph_support import GithubStandIn, ScriptedGateway, make_settings, recorder

pytestmark = pytest.mark.anyio

PROJECT = {
    "id": 42,
    "name": "shop",
    "repo": "https://github.com/acme/shop.git",
    "runtime": "process",
}
REQUEST: DeployState = {"project": {"id": "42"}, "timeout_s": 60, "service_port": 8100}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keys(keys_dir: Path) -> OrchestratorKeys:
    return OrchestratorKeys.load(keys_dir)


class PlatformStandIn:
    """GET/PATCH /api/projects/42 and POST /api/service-deployments/, recording bodies."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.records: list[Any] = []
        self.patches: list[Any] = []

    def serve(self, *, record_failures: int = 0, patch_status: int = 200) -> None:
        s = self.server
        s.expect_request("/api/projects/42", method="GET").respond_with_json(PROJECT)
        for _ in range(record_failures):
            s.expect_oneshot_request("/api/service-deployments/", method="POST").respond_with_data(
                "upstream unavailable", status=503
            )
        s.expect_request("/api/service-deployments/", method="POST").respond_with_handler(
            recorder(self.records, lambda: _json({"id": 7}, 201))
        )
        s.expect_request("/api/projects/42", method="PATCH").respond_with_handler(
            recorder(self.patches, lambda: _json({"detail": "bad status"}, patch_status))
        )

    def count(self, method: str, path: str) -> int:
        return sum(1 for req, _ in self.server.log if req.method == method and req.path == path)


def _json(body: Any, status: int) -> Response:
    import json

    return Response(json.dumps(body), status=status, content_type="application/json")


async def _deploy(
    settings: OrchestratorSettings, keys: OrchestratorKeys, gateway: ScriptedGateway
) -> DeployState:
    return await run_deploy_graph(
        REQUEST, gateway=gateway, keys=keys, settings=settings, thread_id="req-pd"
    )


def _steps(state: DeployState) -> dict[str, tuple[str, str]]:
    return {o["name"]: (o["status"], o["detail"]) for o in state["post_deploy"]}


async def test_success_records_sets_secrets_and_activates(
    tmp_path: Path, keys: OrchestratorKeys, keys_dir: Path, httpserver: HTTPServer
) -> None:
    api, github = PlatformStandIn(httpserver), GithubStandIn(httpserver)
    api.serve()
    github.serve()
    settings = make_settings(
        tmp_path,
        api_url=httpserver.url_for("/"),
        api_token="api-token-1",
        github_token="ghp_configured",
        github_api_url=github.api_url,
        ci_secrets={"REGISTRY_TOKEN": "reg-s3cret"},
    )
    gateway = ScriptedGateway()
    final = await _deploy(settings, keys, gateway)

    assert final["outcome"] == "success" and exit_code(final) == 0, final.get("errors")
    assert {name: status for name, (status, _) in _steps(final).items()} == {
        "deployment_record": "ok",
        "github_secrets": "ok",
        "project_status": "ok",
    }
    (record,) = api.records
    assert record == {
        "project": "42",
        "service_name": "shop",
        "host": "localhost",
        "port": 8100,
        "status": "running",
        "url": "http://localhost:8000",
        "deployment_info": {
            "repo": "https://github.com/acme/shop.git",
            "ref": "main",
            "project_dir": "~/deploystream-apps/shop",
            "runtime": "process",
            "modules": [],
            "request_id": "req-pd",
        },
    }
    assert api.patches == [{"status": "active"}]
    assert all(
        req.headers["Authorization"] == "Bearer api-token-1"
        for req, _ in httpserver.log
        if req.path.startswith("/api/")
    )
    assert github.put == {
        "DEPLOY_HOST": "localhost",
        "DEPLOY_USER": "deploy",
        "DEPLOY_PROJECT_PATH": "~/deploystream-apps/shop",
        "DEPLOY_PORT": "8100",
        "DEPLOY_SSH_PORT": "22",
        "REGISTRY_TOKEN": "reg-s3cret",
    }
    assert set(github.auth_headers) == {"token ghp_configured"}
    # The token is for the stand-in's host, not github.com where the repo lives: it
    # does not travel with the job (it would be sent to another host than its own).
    (job,) = gateway.submitted
    assert job.github_token is None
    assert final["github_repo"] == "acme/shop"  # inferred from the GitHub URL


async def test_github_app_installation_token(
    tmp_path: Path, keys: OrchestratorKeys, keys_dir: Path, httpserver: HTTPServer
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = tmp_path / "app.pem"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    github = GithubStandIn(httpserver)
    github.serve()
    github.serve_app(installation_id=77, token="ghs_installation")
    settings = make_settings(
        tmp_path,
        github_app_id="12345",
        github_app_key_path=key_path,
        github_api_url=github.api_url,
        github_repo="acme/shop",
    )
    gateway = ScriptedGateway()
    final = await run_deploy_graph(
        {"project": {"name": "shop"}, "repo": "file:///srv/git/shop.git", "service_port": 8000},
        gateway=gateway,
        keys=keys,
        settings=settings,
        thread_id="req-app",
    )
    assert final["outcome"] == "success", final.get("errors")
    # A file:// repo asked for no token: none travels with the job (the App's is
    # used for the Actions secrets only).
    (job,) = gateway.submitted
    assert job.github_token is None
    assert set(github.auth_headers) == {"token ghs_installation"}
    assert github.put["DEPLOY_HOST"] == "localhost"
    # The App authenticated with a JWT signed by its key (RS256, issuer = app id).
    app_calls = [req for req, _ in httpserver.log if req.path.startswith("/app/")]
    assert app_calls, "no access token was requested"
    bearer = app_calls[0].headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(bearer, private.public_key(), algorithms=["RS256"])
    assert str(claims["iss"]) == "12345"
    assert _steps(final)["deployment_record"][0] == "skipped"


async def test_transient_failures_are_retried(
    tmp_path: Path, keys: OrchestratorKeys, httpserver: HTTPServer
) -> None:
    api, github = PlatformStandIn(httpserver), GithubStandIn(httpserver, put_failures=1)
    api.serve(record_failures=1)
    github.serve()
    settings = make_settings(
        tmp_path,
        api_url=httpserver.url_for("/"),
        github_token="ghp_x",
        github_api_url=github.api_url,
    )
    final = await _deploy(settings, keys, ScriptedGateway())
    assert final["outcome"] == "success", final.get("errors")
    assert api.count("POST", "/api/service-deployments/") == 2  # 503, then 201
    assert len(api.records) == 1
    assert api.count("PUT", "/repos/acme/shop/actions/secrets/DEPLOY_HOST") == 2  # 502, then 201
    assert github.put["DEPLOY_HOST"] == "localhost"


async def test_rejected_step_is_reported_not_ignored(
    tmp_path: Path, keys: OrchestratorKeys, httpserver: HTTPServer
) -> None:
    api = PlatformStandIn(httpserver)
    api.serve(patch_status=400)
    httpserver.expect_request("/repos/acme/shop", method="GET").respond_with_json(
        {"message": "Not Found"}, status=404
    )
    settings = make_settings(
        tmp_path,
        api_url=httpserver.url_for("/"),
        github_token="ghp_x",
        github_api_url=httpserver.url_for("/").rstrip("/"),
    )
    final = await _deploy(settings, keys, ScriptedGateway())
    steps = _steps(final)
    assert steps["deployment_record"][0] == "ok"
    assert steps["project_status"][0] == "failed" and "HTTP 400" in steps["project_status"][1]
    assert steps["github_secrets"][0] == "failed" and "HTTP 404" in steps["github_secrets"][1]
    assert final["outcome"] == "post_deploy_failed" and exit_code(final) == 1
    assert len(final["errors"]) == 2
    assert api.count("PATCH", "/api/projects/42") == 1  # a 4xx is not retried
    assert "ghp_x" not in " ".join(final["errors"])


async def test_unconfigured_integrations_are_skipped(
    tmp_path: Path, keys: OrchestratorKeys
) -> None:
    final = await run_deploy_graph(
        {"project": {"id": "42", "name": "shop"}, "repo": "acme/shop", "service_port": 8000},
        gateway=ScriptedGateway(),
        keys=keys,
        settings=make_settings(tmp_path),
        thread_id="req-skip",
    )
    assert final["outcome"] == "success"
    assert _steps(final) == {
        "deployment_record": ("skipped", "platform API not configured"),
        "github_secrets": ("skipped", "GitHub not configured"),
        "project_status": ("skipped", "platform API not configured"),
    }


async def test_platform_api_unreachable_after_retries(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(tmp_path, api_url=f"http://127.0.0.1:{port}")
    async with PlatformApi(settings) as api:
        with pytest.raises(PlatformApiUnavailable, match="unreachable"):
            await api.set_project_status("42", "active")


async def test_platform_api_rejects_without_retry(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/service-deployments/", method="POST").respond_with_json(
        {"port": ["invalid"]}, status=422
    )
    async with PlatformApi(make_settings(tmp_path, api_url=httpserver.url_for("/"))) as api:
        with pytest.raises(PlatformApiRejected) as caught:
            await api.create_service_deployment(
                project_id="42",
                service_name="shop",
                host="localhost",
                port=8000,
                request_id="r",
                repo="acme/shop",
                ref="main",
                project_dir="/srv/shop",
                runtime=None,
                modules=[],
                deployed_url=None,
            )
    assert caught.value.status == 422 and "invalid" in str(caught.value)
    assert len(httpserver.log) == 1


def test_settings_from_env_and_validation(tmp_path: Path) -> None:
    settings = OrchestratorSettings.from_env(
        {
            "DEPLOYSTREAM_API_URL": "http://api.local",
            "GITHUB_TOKEN": "ghp_env",
            "DEPLOYSTREAM_CI_SECRET_SENTRY_DSN": "https://x@sentry/1",
            "DEPLOYSTREAM_QUEUE_ALLOWANCE_S": "120",
            "XDG_STATE_HOME": str(tmp_path),
        }
    )
    assert settings.api_url == "http://api.local" and settings.github_configured
    assert settings.ci_secrets == {"SENTRY_DSN": "https://x@sentry/1"}
    assert settings.queue_allowance_s == 120.0
    assert settings.checkpoint_db == tmp_path / "deploystream" / "checkpoints.sqlite"
    assert "ghp_env" not in repr(settings) and "sentry" not in repr(settings)
    with pytest.raises(SettingsError, match="both its id and its private key"):
        OrchestratorSettings(github_app_id="1")
    with pytest.raises(SettingsError, match="either a GitHub token or a GitHub App"):
        OrchestratorSettings(github_token="t", github_app_id="1", github_app_key_path=tmp_path)
    with pytest.raises(SettingsError, match="must be a number"):
        OrchestratorSettings.from_env({"DEPLOYSTREAM_HTTP_ATTEMPTS": "many"})


async def test_clone_token_travels_only_to_its_github_host(
    tmp_path: Path, keys: OrchestratorKeys, keys_dir: Path, httpserver: HTTPServer
) -> None:
    """The stand-in plays GitHub Enterprise (its API host is the token's host): a repo
    on that host gets the token, sealed; a file://, ssh or other-host repo gets none."""
    github = GithubStandIn(httpserver)
    github.serve()
    host = httpserver.host
    settings = make_settings(tmp_path, github_token="ghp_configured", github_api_url=github.api_url)
    sent: dict[str, str | None] = {}
    for repo in (
        f"https://{host}/acme/shop.git",
        "file:///srv/git/shop.git",
        "git@github.com:acme/shop.git",
        "https://github.com/acme/shop.git",
        "https://attacker.example/acme/shop.git",
    ):
        gateway = ScriptedGateway()
        final = await run_deploy_graph(
            {"project": {"name": "shop"}, "repo": repo, "service_port": 8000},
            gateway=gateway,
            keys=keys,
            settings=settings,
            thread_id=f"req-{len(sent)}",
        )
        assert final["outcome"] == "success", final.get("errors")
        (job,) = gateway.submitted
        sent[repo] = (
            job.github_token and open_secrets(ExecutorKeys.load(keys_dir), job).github_token
        )
    assert sent == {
        f"https://{host}/acme/shop.git": "ghp_configured",
        "file:///srv/git/shop.git": None,
        "git@github.com:acme/shop.git": None,
        "https://github.com/acme/shop.git": None,
        "https://attacker.example/acme/shop.git": None,
    }


def test_token_applies_to_the_github_host_only() -> None:
    assert token_applies("acme/shop", "https://api.github.com")
    assert token_applies("https://github.com/acme/shop.git", "https://api.github.com/")
    assert token_applies("https://ghe.corp/acme/shop", "https://ghe.corp/api/v3")
    for repo in ("file:///x", "ssh://git@github.com/a/b", "https://evil.example/a/b"):
        assert not token_applies(repo, "https://api.github.com"), repo
