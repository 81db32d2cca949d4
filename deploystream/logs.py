"""Structured logs (structlog): JSON when stderr is not a terminal, bound context."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog

from deploystream.redact import DEFAULT as redact


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_scrub(v) for v in value]
    return value


def _redact_processor(
    _: object, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # Token shapes and the secrets of running jobs never reach a log line, at any depth.
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value)
    return event_dict


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written, not when logging was set up
    (a stream replaced since, e.g. by a test's capture, may be closed)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", *, json: bool | None = None) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        # Not cached: a logger bound once would keep this configuration (and this
        # stream) for good, also after a later configure() or capture_logs().
        cache_logger_on_first_use=False,
    )
