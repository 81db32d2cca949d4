"""Per-host progress of the requests ``status`` lists as running.

Each running request's event stream is read forward from where the previous
refresh stopped (XRANGE, at most :data:`EVENTS_PER_REFRESH` entries per request
per refresh) and folded into a :class:`~deploystream.cli.progress.Progress`, the
same state ``tail`` and the live view draw. A one-shot ``status`` reads each
running stream once; ``--watch`` keeps the readers and reads only what is new.
A stream longer than the bound is shown as far as it was read (``partial``).
Events are verified as ``tail`` verifies them (:class:`deploystream.proofs.EventVerifier`):
one no trusted executor signed is ignored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.asyncio import Redis

from contracts import Result, StreamsConfig, Submitted, Unverified
from deploystream.cli.progress import COUNTED, Progress, format_counts
from deploystream.keys import Trust
from deploystream.proofs import EventVerifier, entries_before

EVENTS_PER_REFRESH = 5000
_CHUNK = 1000


@dataclass
class _Reader:
    progress: Progress
    verifier: EventVerifier
    last_id: str = "-"
    partial: bool = False


@dataclass
class RunningHosts:
    """Readers of the running requests' event streams, kept across refreshes."""

    config: StreamsConfig
    trust: Trust
    _readers: dict[str, _Reader] = field(default_factory=dict)

    async def hosts(self, redis: Redis, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``request_id -> {"task", "partial", "hosts": {host: {status, counts...}}}``;
        readers of requests no longer running are dropped."""
        wanted = set(request_ids)
        for gone in set(self._readers) - wanted:
            del self._readers[gone]
        out: dict[str, dict[str, Any]] = {}
        for rid in request_ids:
            reader = self._readers.get(rid)
            if reader is None:
                key = self.config.events_key(rid)
                fetch_before = partial(entries_before, redis, key)
                verifier = EventVerifier(self.trust, rid, key, fetch_before)
                reader = self._readers[rid] = _Reader(Progress(rid), verifier)
            await self._read(redis, reader)
            out[rid] = _describe(reader)
        return out

    async def _read(self, redis: Redis, reader: _Reader) -> None:
        key = self.config.events_key(reader.progress.request_id)
        read = 0
        while read < EVENTS_PER_REFRESH:
            low = reader.last_id if reader.last_id == "-" else f"({reader.last_id}"
            entries = await redis.xrange(key, min=low, max="+", count=_CHUNK)
            checked = []
            for entry_id, fields in entries:
                reader.last_id = entry_id.decode()
                checked += await reader.verifier.add(reader.last_id, fields)
            if len(entries) < _CHUNK:  # everything there was: no batch is cut
                checked += reader.verifier.settle()
            for _, event in checked:
                if isinstance(event, Unverified):
                    continue  # no trusted executor's: ignored
                if isinstance(event, Submitted) and reader.progress.result is not None:
                    # A replay of a finished request: a new generation starts over.
                    reader.progress = Progress(reader.progress.request_id)
                reader.progress.apply(event)
            read += len(entries)
            if len(entries) < _CHUNK:
                break
        # At the bound: more to read (next refresh) unless the stream ends here.
        more = read >= EVENTS_PER_REFRESH and bool(
            await redis.xrange(key, min=f"({reader.last_id}", max="+", count=1)
        )
        reader.partial = more


def _describe(reader: _Reader) -> dict[str, Any]:
    p = reader.progress
    result: Result | None = p.result
    hosts: dict[str, dict[str, Any]] = {}
    for host, counts in p.host_totals().items():
        state: str
        if result is not None and host in result.hosts:
            state = result.hosts[host].status
        elif counts.get("unreachable"):
            state = "unreachable"
        elif counts.get("failed"):
            state = "failed"
        else:
            state = "running"
        hosts[host] = {"status": state, **{k: counts.get(k, 0) for k in COUNTED}}
    if result is not None:
        for host, summary in result.hosts.items():  # hosts with no counts (not_run)
            hosts.setdefault(host, {"status": summary.status, **dict.fromkeys(COUNTED, 0)})
    return {"task": p.task, "partial": reader.partial, "hosts": hosts}


def format_hosts(hosts: dict[str, dict[str, Any]]) -> str:
    """One line per host: ``host: status ok=1 changed=0 …``."""
    return "\n".join(
        f"{host}: {h['status']} {format_counts(Counter({k: h[k] for k in COUNTED}))}"
        for host, h in hosts.items()
    )
