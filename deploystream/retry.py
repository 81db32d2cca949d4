"""Retrying Redis calls through restarts, failovers, dropped connections and a full Redis.

One policy for every Redis call of the client and the executors: retry forever on
:func:`retryable` errors (exponential backoff with jitter, 50 ms doubling to at
most 2 s); any other error propagates at once. Errors are classified by type
(:mod:`deploystream.redis_errors`). An out-of-memory Redis is back-pressure: the
call waits until memory is freed, and says so in the log (once when it starts
waiting, then every 20 tries) -- unless the caller asks to fail at once
(``wait_on_oom=False``: a one-shot CLI command reports it and exits 3).

:func:`redis_call` makes the first attempt directly and hands the call to tenacity
only once it has failed. tenacity inspects the callable on every attempt (about
0.1 ms of CPU), which the dispatch profile showed as a fifth of the client's CPU
when it wrapped every call; on the happy path there is nothing to retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from deploystream.redis_errors import describe, kind, retryable

__all__ = ["policy", "redis_call", "retryable"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


def _say_why(state: RetryCallState) -> None:
    """Log an out-of-memory wait: the first time, then every 20 tries."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if exc is None or kind(exc) != "oom":
        return
    n = state.attempt_number
    if n == 1 or n % 20 == 0:
        log.warning("redis.out_of_memory", error=describe(exc), tries=n)


def policy(*, wait_on_oom: bool = True) -> AsyncRetrying:
    """The retry policy itself (forever, 50 ms doubling to 2 s, jittered)."""

    def worth_it(exc: BaseException) -> bool:
        return retryable(exc) and (wait_on_oom or kind(exc) != "oom")

    return AsyncRetrying(
        retry=retry_if_exception(worth_it),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
        before_sleep=_say_why,
        reraise=True,
    )


async def redis_call(call: Callable[[], Awaitable[T]], *, wait_on_oom: bool = True) -> T:
    """Await ``call()``, retried under :func:`policy` while it fails retryably."""
    try:
        return await call()
    except Exception as exc:
        if not retryable(exc) or (not wait_on_oom and kind(exc) == "oom"):
            raise
    async for attempt in policy(wait_on_oom=wait_on_oom):
        with attempt:
            return await call()
    raise AssertionError("unreachable: the policy retries forever")  # pragma: no cover
