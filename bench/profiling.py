"""Where a benchmark's CPU goes: cProfile in each process, summarized per job.

:func:`top` turns a stats file (or a live :class:`cProfile.Profile`) into the
functions with the most self time, as CPU microseconds per job and share of the
process's profiled total, grouped by where the code lives (deploystream, redis-py,
asyncio, libsodium ...) so a report can say what bounds a figure.

The profiled pass runs apart from the timed rounds: cProfile slows Python code
about 1.5-2x, so its figures are proportions, not speeds.
"""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path
from typing import Any

# Where a function lives, by the first matching fragment of its file path.
_AREAS = (
    ("/redis/", "redis-py"),
    ("/asyncio/", "asyncio"),
    ("/anyio/", "anyio"),
    ("/nacl/", "libsodium (PyNaCl)"),
    ("/msgspec/", "msgspec"),
    ("/structlog/", "structlog"),
    ("/prometheus_client/", "prometheus-client"),
    ("/contracts/", "deploystream"),
    ("/executor/", "deploystream"),
    ("/orchestrator/", "deploystream"),
    ("/deploystream/", "deploystream"),
    ("/bench/", "benchmark driver"),
)


def _area(filename: str, name: str) -> str:
    for fragment, area in _AREAS:
        if fragment in filename:
            return area
    if filename == "~":  # a builtin: name it by what it is
        if "socket" in name or "epoll" in name or "select" in name:
            return "syscalls (socket, epoll)"
        if "_sodium" in name:
            return "libsodium (PyNaCl)"
        if "msgspec" in name:
            return "msgspec"
        return "builtins"
    return "python stdlib/other"


def _label(filename: str, line: int, name: str) -> str:
    if filename == "~":
        return name
    short = filename.split("site-packages/")[-1].split("/lib/python3")[-1].lstrip("/")
    return f"{short}:{line}({name})"


def top(source: str | Path | cProfile.Profile, jobs: int, limit: int = 12) -> dict[str, Any]:
    """Top self-time functions and per-area totals, in CPU microseconds per job."""
    stats = pstats.Stats(str(source)) if isinstance(source, str | Path) else pstats.Stats(source)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values()) or 1.0
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)
    areas: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in raw.items():
        key = _area(filename, name)
        areas[key] = areas.get(key, 0.0) + tt
    return {
        "profiled_us_per_job": round(total * 1e6 / jobs, 1),
        "areas": [
            {"area": a, "us_per_job": round(t * 1e6 / jobs, 1), "share": round(t / total, 3)}
            for a, t in sorted(areas.items(), key=lambda kv: kv[1], reverse=True)
        ],
        "functions": [
            {
                "function": _label(filename, line, name),
                "calls_per_job": round(nc / jobs, 2),
                "us_per_job": round(tt * 1e6 / jobs, 1),
                "share": round(tt / total, 3),
            }
            for (filename, line, name), (_cc, nc, tt, _ct, _callers) in rows[:limit]
        ],
    }
