"""Running the deploy graph: what the CLI and the orchestrator service call.

One-shot (``deployctl deploy``)::

    final = await run_deploy_graph(request, gateway=client, keys=keys, settings=settings,
                                   secrets={"DB_PASSWORD": ...}, on_event=show)
    sys.exit(exit_code(final))

A service opens the graph once and runs many threads on it::

    async with open_deploy_graph(gateway=client, keys=keys, settings=settings) as graph:
        final = await run_graph(graph, request, thread_id=request_id, on_event=...)
        final = await resume_graph(graph, thread_id)  # after adopting a dead peer's request

The thread id is the request id. A thread that already has a checkpoint is resumed
(never started over), and a finished one is returned as it is: one request id, one
deploy. Checkpoints are written synchronously (``durability="sync"``), so the request
id is on disk before tailing starts.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import msgspec
import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from contracts import Event
from deploystream.keys import OrchestratorKeys
from orchestrator.checkpoint import open_checkpointer
from orchestrator.errors import OrchestratorError
from orchestrator.gateway import JobGateway
from orchestrator.github_secrets import GithubSecrets
from orchestrator.graph import DeployGraph, build_deploy_graph
from orchestrator.job_builder import new_request_id
from orchestrator.platform_api import PlatformApi
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployContext, DeployState

log = structlog.get_logger(__name__)

EventCallback = Callable[[Event], Awaitable[None] | None]
UpdateCallback = Callable[[str, dict[str, Any]], Awaitable[None] | None]

_event_type: Any = Event  # a Union: msgspec.convert takes it, mypy's type[T] does not


class UnknownThreadError(OrchestratorError):
    """``resume`` was asked for a thread that has no checkpoint."""


@asynccontextmanager
async def open_deploy_graph(
    *,
    gateway: JobGateway,
    keys: OrchestratorKeys,
    settings: OrchestratorSettings,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> AsyncIterator[DeployGraph]:
    """The compiled graph with its checkpointer and the integrations the settings enable."""
    async with AsyncExitStack() as stack:
        if checkpointer is None:
            checkpointer = await stack.enter_async_context(open_checkpointer(settings))
        api = None
        if settings.api_configured:
            api = await stack.enter_async_context(PlatformApi(settings))
        github = GithubSecrets(settings) if settings.github_configured else None
        yield build_deploy_graph(
            gateway=gateway,
            keys=keys,
            settings=settings,
            platform_api=api,
            github=github,
            checkpointer=checkpointer,
        )


async def run_deploy_graph(
    request: DeployState,
    *,
    gateway: JobGateway,
    keys: OrchestratorKeys,
    settings: OrchestratorSettings,
    secrets: Mapping[str, str] | None = None,
    thread_id: str | None = None,
    on_event: EventCallback | None = None,
    on_update: UpdateCallback | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> DeployState:
    """Open the graph, run one deploy (or resume its thread), return the final state."""
    async with open_deploy_graph(
        gateway=gateway, keys=keys, settings=settings, checkpointer=checkpointer
    ) as graph:
        return await run_graph(
            graph,
            request,
            settings=settings,
            secrets=secrets,
            thread_id=thread_id,
            on_event=on_event,
            on_update=on_update,
        )


async def run_graph(
    graph: DeployGraph,
    request: DeployState,
    *,
    settings: OrchestratorSettings,
    secrets: Mapping[str, str] | None = None,
    thread_id: str | None = None,
    on_event: EventCallback | None = None,
    on_update: UpdateCallback | None = None,
) -> DeployState:
    secrets = dict(secrets or {})
    thread_id = thread_id or request.get("request_id") or new_request_id()
    config = graph_config(thread_id, request.get("timeout_s"), settings)
    snapshot = await graph.aget_state(config)
    if snapshot.values:
        if not snapshot.next:
            log.info("deploy.already_finished", request_id=thread_id)
            return cast(DeployState, snapshot.values)
        log.info("deploy.resuming", request_id=thread_id, next=list(snapshot.next))
        graph_input: DeployState | None = None
    else:
        graph_input = {**request, "request_id": thread_id, "secret_names": sorted(secrets)}
    context = DeployContext(secrets=secrets)
    return await _drive(graph, graph_input, config, context, on_event, on_update)


async def resume_graph(
    graph: DeployGraph,
    thread_id: str,
    *,
    settings: OrchestratorSettings,
    on_event: EventCallback | None = None,
    on_update: UpdateCallback | None = None,
) -> DeployState:
    probe = await graph.aget_state(graph_config(thread_id, None, settings))
    if not probe.values:
        raise UnknownThreadError(f"no checkpointed deploy for {thread_id!r}")
    values = cast(DeployState, probe.values)
    if not probe.next:
        return values
    config = graph_config(thread_id, values.get("timeout_s"), settings)
    log.info("deploy.resuming", request_id=thread_id, next=list(probe.next))
    return await _drive(graph, None, config, DeployContext(), on_event, on_update)


async def _drive(
    graph: DeployGraph,
    graph_input: DeployState | None,
    config: RunnableConfig,
    context: DeployContext,
    on_event: EventCallback | None,
    on_update: UpdateCallback | None,
) -> DeployState:
    async for mode, chunk in graph.astream(
        graph_input,
        config,
        context=context,
        stream_mode=["custom", "updates"],
        durability="sync",
    ):
        if mode == "custom" and on_event is not None:
            await _call(on_event, msgspec.convert(chunk, _event_type))
        elif mode == "updates" and on_update is not None:
            for node, update in cast(dict[str, Any], chunk).items():
                await _call(on_update, node, dict(update or {}))
    final = await graph.aget_state(config)
    return cast(DeployState, final.values)


async def _call(callback: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    outcome = callback(*args)
    if inspect.isawaitable(outcome):
        await outcome


def graph_config(
    thread_id: str, timeout_s: int | None, settings: OrchestratorSettings
) -> RunnableConfig:
    """The run config for a thread: its id, and room for every tailing slice."""
    wait = (timeout_s or 900) + settings.queue_allowance_s
    limit = math.ceil(wait / settings.checkpoint_every_s) + 50
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": limit}
