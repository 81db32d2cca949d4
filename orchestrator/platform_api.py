"""Async client for the platform API: projects and service-deployment records.

Transient failures (connection errors, 5xx, 429) are retried with exponential
backoff; a 4xx is our mistake and raises :class:`PlatformApiRejected` at once.
Every httpx error is translated here, so callers only see ``orchestrator.errors``.
A POST is retried only when the request surely did not reach the server or the
server said it failed (5xx), so a lost answer cannot create a record twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from contracts.jobs import parse_host_spec
from deploystream.errors import BadInputError
from orchestrator.errors import PlatformApiError, PlatformApiRejected, PlatformApiUnavailable
from orchestrator.settings import OrchestratorSettings

log = structlog.get_logger(__name__)

_IDEMPOTENT = frozenset({"GET", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class ProjectInfo:
    """What the deploy needs from ``GET /api/projects/{id}`` (tolerant of field names)."""

    id: str
    name: str | None = None
    repo: str | None = None
    ref: str | None = None
    github_repo: str | None = None
    runtime: str | None = None
    service_port: int | None = None
    host: str | None = None
    modules: list[str] = field(default_factory=list)
    # The project's servers ("[user@]host[:port]" each, or {host, port, user}), used
    # when the request names no host: the first is the target, the rest more hosts.
    servers: list[tuple[str, int, str | None]] = field(default_factory=list)

    @classmethod
    def from_api(cls, project_id: str, data: dict[str, Any]) -> ProjectInfo:
        def first(*names: str) -> Any:
            return next((data[n] for n in names if data.get(n) not in (None, "")), None)

        port = first("service_port", "port")
        modules = first("modules")
        return cls(
            id=str(first("id") or project_id),
            name=first("name", "slug"),
            repo=first("repo", "repo_url", "git_url", "repository"),
            ref=first("ref", "branch"),
            github_repo=first("github_repo", "github_repository"),
            runtime=first("runtime"),
            service_port=int(port) if port is not None else None,
            host=first("host", "server_host"),
            modules=[str(m) for m in modules] if isinstance(modules, list) else [],
            servers=_servers(first("servers", "hosts")),
        )


def _servers(raw: Any) -> list[tuple[str, int, str | None]]:
    """A project's server list; a malformed entry is bad input from the platform."""
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if isinstance(item, dict):
            user = item.get("user") or None
            out.append((str(item.get("host", "")), int(item.get("port") or 22), user))
            continue
        try:
            out.append(parse_host_spec(str(item)))
        except ValueError as exc:
            raise BadInputError(f"platform API: project servers: {exc}") from exc
    return out


class _Transient(Exception):
    """Internal: a failure worth another attempt (wrapped so tenacity can tell)."""

    def __init__(self, error: PlatformApiError) -> None:
        super().__init__(str(error))
        self.error = error


class PlatformApi:
    """``async with PlatformApi(settings) as api: ...`` (or pass an ``httpx.AsyncClient``)."""

    def __init__(
        self, settings: OrchestratorSettings, *, client: httpx.AsyncClient | None = None
    ) -> None:
        if not settings.api_url:
            raise PlatformApiError("platform API URL is not configured")
        headers = {"Accept": "application/json", "User-Agent": "deploystream-orchestrator"}
        if settings.api_token:
            headers["Authorization"] = f"Bearer {settings.api_token}"
        self._settings = settings
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=settings.api_url.rstrip("/"),
            headers=headers,
            timeout=settings.http_timeout_s,
        )

    async def __aenter__(self) -> PlatformApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def get_project(self, project_id: str) -> ProjectInfo:
        data = await self._request("GET", f"/api/projects/{project_id}")
        if not isinstance(data, dict):
            raise PlatformApiError(f"project {project_id}: expected a JSON object")
        return ProjectInfo.from_api(project_id, data)

    async def create_service_deployment(
        self,
        *,
        project_id: str,
        service_name: str,
        host: str,
        port: int,
        request_id: str,
        repo: str,
        ref: str,
        project_dir: str,
        runtime: str | None,
        modules: list[str],
        deployed_url: str | None,
        status: str = "running",
    ) -> dict[str, Any]:
        body = {
            "project": project_id,
            "service_name": service_name,
            "host": host,
            "port": port,
            "status": status,
            "url": deployed_url,
            "deployment_info": {
                "repo": repo,
                "ref": ref,
                "project_dir": project_dir,
                "runtime": runtime,
                "modules": modules,
                "request_id": request_id,
            },
        }
        data = await self._request("POST", "/api/service-deployments/", json=body)
        return data if isinstance(data, dict) else {}

    async def set_project_status(
        self, project_id: str, status: str, reason: str | None = None
    ) -> None:
        body: dict[str, Any] = {"status": status}
        if reason:
            body["status_reason"] = reason[:1000]
        await self._request("PATCH", f"/api/projects/{project_id}", json=body)

    async def _request(self, method: str, path: str, *, json: Any = None) -> Any:
        s = self._settings
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            stop=stop_after_attempt(s.http_attempts),
            wait=wait_exponential(multiplier=s.retry_wait_initial_s, max=s.retry_wait_max_s),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(method, path, json)
        except _Transient as exc:
            raise exc.error from exc.__cause__
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, path: str, json: Any) -> Any:
        what = f"{method} {path}"
        try:
            response = await self._client.request(method, path, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            err = PlatformApiUnavailable(f"{what}: platform API unreachable ({exc})")
            log.warning("platform_api.retry", call=what, reason=type(exc).__name__)
            raise _Transient(err) from exc
        except httpx.TransportError as exc:
            err = PlatformApiUnavailable(f"{what}: {type(exc).__name__}: {exc}")
            if method not in _IDEMPOTENT:
                raise err from exc  # the server may have acted: do not repeat a POST
            log.warning("platform_api.retry", call=what, reason=type(exc).__name__)
            raise _Transient(err) from exc
        status = response.status_code
        if status >= 500 or status == 429:
            log.warning("platform_api.retry", call=what, status=status)
            raise _Transient(
                PlatformApiUnavailable(f"{what}: HTTP {status} {_brief(response)}", status=status)
            )
        if status >= 400:
            raise PlatformApiRejected(f"{what}: HTTP {status} {_brief(response)}", status=status)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise PlatformApiError(f"{what}: answer is not JSON", status=status) from exc


def _brief(response: httpx.Response) -> str:
    """The server's own error message, short (never our request body)."""
    text = response.text.strip().replace("\n", " ")
    return text[:300]
