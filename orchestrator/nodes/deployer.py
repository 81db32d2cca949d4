"""``submit`` and ``deployer``: put the prepared job on its stream, then follow it.

Two nodes on purpose. ``submit`` returns the request id, and the graph checkpoints
it before ``deployer`` starts, so a crash while tailing resumes tailing the *same*
request and never submits again. (``submit`` is also idempotent by itself: the job's
request id and idempotency key were fixed by ``prepare``.)

``deployer`` tails in slices of at most ``checkpoint_every_s``: each slice returns the
last event id, which is checkpointed, and the graph loops back until the terminal
``result`` arrives or the wait bound (``timeout_s`` + queue allowance, counted from
submission) is spent. Every event goes to LangGraph's custom stream as it arrives.

The wait deadline is stored in the checkpoint and compared when the graph resumes,
maybe on another machine: it is on Redis's clock (``gateway.redis_time()``), never on the
local one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
import msgspec
import structlog
from langgraph.config import get_stream_writer

from contracts import CancelRequested, Event, Result, Unverified, Waiting
from deploystream.errors import BadInputError, InfrastructureError, StreamGapError
from orchestrator.gateway import JobGateway
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployState, job_of

log = structlog.get_logger(__name__)


class SubmitNode:
    def __init__(self, gateway: JobGateway, settings: OrchestratorSettings) -> None:
        self._gateway = gateway
        self._settings = settings

    async def __call__(self, state: DeployState) -> dict[str, Any]:
        if state.get("submitted"):
            return {}  # never a second job for this thread
        job = job_of(state)
        try:
            request_id = await self._gateway.submit(job)
        except BadInputError as exc:  # e.g. refused before anything reached a stream
            log.warning("deploy.not_submitted", request_id=job.request_id, error=str(exc))
            return {"outcome": "bad_input", "errors": [f"nothing submitted: {exc}"]}
        deadline = (
            await self._gateway.redis_time() + job.timeout_s + self._settings.queue_allowance_s
        )
        log.info(
            "deploy.submitted",
            request_id=request_id,
            project=job.project_name,
            wait_s=job.timeout_s + self._settings.queue_allowance_s,
        )
        return {
            "request_id": request_id,
            "submitted": True,
            "last_event_id": "0",
            "wait_deadline": deadline,
            "events_seen": 0,
        }


class DeployerNode:
    """Follow a submitted request: forward events, record progress, end on its result."""

    def __init__(self, gateway: JobGateway, settings: OrchestratorSettings) -> None:
        self._gateway = gateway
        self._settings = settings

    async def __call__(self, state: DeployState) -> dict[str, Any]:
        request_id = state["request_id"]
        after = state.get("last_event_id") or "0"
        deadline = state["wait_deadline"]
        waiting_since = state.get("waiting_since")
        s = self._settings
        # A resumed run past its deadline still reads what is already there.
        window = min(
            s.checkpoint_every_s, max(deadline - await self._gateway.redis_time(), s.final_read_s)
        )
        write = get_stream_writer()
        last, seen, result, ended = after, 0, None, False
        stream = self._gateway.events(request_id, after=after)
        missing: StreamGapError | None = None
        try:
            with anyio.move_on_after(window):
                async for entry_id, event in stream:
                    write(msgspec.to_builtins(event))
                    last, seen = entry_id, seen + 1
                    # A wait for the project's lock does not count against the bound.
                    if isinstance(event, Waiting):
                        waiting_since = waiting_since or await self._gateway.redis_time()
                    elif waiting_since is not None and not isinstance(
                        event, (CancelRequested, Unverified)
                    ):
                        deadline += await self._gateway.redis_time() - waiting_since
                        waiting_since = None
                    if isinstance(event, Result):
                        result = event
                        break
                else:
                    ended = True
        except StreamGapError as exc:
            missing = exc
        finally:
            await _aclose(stream)
        if waiting_since is not None:  # still waiting: none of it counts so far
            now = await self._gateway.redis_time()
            deadline += now - waiting_since
            waiting_since = now
        update: dict[str, Any] = {
            "last_event_id": last,
            "events_seen": state.get("events_seen", 0) + seen,
            "wait_deadline": deadline,
            "waiting_since": waiting_since,
        }
        if result is not None:
            return update | _finished(result)
        if missing is not None:  # reading on cannot help: what is lost stays lost
            log.error("deploy.events_missing", request_id=request_id, error=str(missing))
            return update | {"outcome": "events_missing", "errors": [f"events missing: {missing}"]}
        if ended:
            # The gateway promises to end only after the result; do not spin on it.
            raise InfrastructureError(
                f"event stream of request {request_id} ended without a result"
            )
        if await self._gateway.redis_time() >= deadline:
            job = job_of(state)
            waited = job.timeout_s + s.queue_allowance_s
            message = (
                f"no result for request {request_id} after {waited:.0f}s "
                f"(timeout {job.timeout_s}s + queue allowance {s.queue_allowance_s:.0f}s); "
                f"it may still be queued or running: follow it with "
                f"`deployctl tail {request_id}` or stop it with `deployctl cancel {request_id}`"
            )
            log.warning("deploy.wait_exceeded", request_id=request_id, waited_s=waited)
            return update | {"outcome": "wait_exceeded", "errors": [message]}
        return update


def _finished(result: Result) -> dict[str, Any]:
    log.info(
        "deploy.result",
        request_id=result.request_id,
        status=result.status,
        deployed_url=result.deployed_url,
        event_count=result.event_count,
    )
    update: dict[str, Any] = {"result": msgspec.to_builtins(result)}
    if not result.ok:
        update["outcome"] = "deploy_failed"
        update["errors"] = [describe_failure(result)]
    return update


def describe_failure(result: Result) -> str:
    text = f"deploy {result.request_id} ended {result.status}"
    if result.failed_at:
        text += f" {result.failed_at}"
    return f"{text}: {result.error}" if result.error else text


async def _aclose(stream: AsyncIterator[tuple[str, Event]]) -> None:
    aclose = cast(Callable[[], Awaitable[None]] | None, getattr(stream, "aclose", None))
    if aclose is not None:
        await aclose()
