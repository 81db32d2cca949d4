"""Deployment requests on ``deploy.requests``: what the platform asks the orchestrator.

Secret values arrive already sealed to the executors' public key (the platform
holds only that public half), so no plaintext passes through this stream either.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from contracts.jobs import HostName, PlaybookName, Port, RequestId, Sealed


class DeployRequest(
    Struct, kw_only=True, tag_field="kind", tag="deploy_request", forbid_unknown_fields=True
):
    request_id: RequestId
    project_name: str | None = None
    project_id: str | None = None
    repo: Annotated[str, Meta(max_length=2048)] | None = None
    ref: str | None = None
    host: HostName | None = None
    service_port: Port | None = None
    env: dict[str, str] = {}
    sealed_secrets: dict[str, Sealed] = {}
    extra_vars: dict[str, Any] = {}
    modules: list[str] = []
    playbook: PlaybookName | None = None
    timeout_s: Annotated[int, Meta(ge=1, le=86_400)] | None = None
    github_repo: str | None = None
