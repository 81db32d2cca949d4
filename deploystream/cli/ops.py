"""Operator commands: ``status`` and the dead-letter streams (``dlq list|replay``).

``status`` reads everything from Redis, so it shows the whole pool wherever it
runs: the job streams (length, consumer group, lag, pending), each consumer (idle
time, pending entries), the dead-letter counts, the live executors (their presence
hashes ``deploystream.executor:<name>``, which expire when an executor dies) and
the requests being worked on (the group's pending entries: owner, idle time,
deliveries; an entry idle past the lease is waiting to be adopted; its task now
and each host's status and counts so far, ``deploystream.cli.running_hosts``), and
``deploy.requests`` with its group ``orchestrators`` (its consumers are the
orchestrator services).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import click
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from contracts import DecodeError, StreamsConfig, decode_job, job_kind
from deploystream.cli.app import EXIT_OK, App
from deploystream.cli.params import ENTRY_ID
from deploystream.cli.running_hosts import RunningHosts, format_hosts
from deploystream.errors import KeyMaterialError
from deploystream.keys import Trust
from deploystream.proofs import verify_presence
from deploystream.redis_clock import RedisClock
from deploystream.terminal import clean, json_safe
from orchestrator.client import StreamClient

_json = msgspec.json.Encoder()
_PENDING_SHOWN = 200


def _echo_json(obj: object) -> None:
    click.echo(json_safe(_json.encode(obj)).decode())


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


# ---------------------------------------------------------------------- status
async def _group_info(redis: Redis, stream: str, group: str) -> dict[str, Any] | None:
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return None
    for g in groups:
        if _s(g.get("name")) == group:
            lag = g.get("lag")
            return {
                "consumers": int(g.get("consumers", 0)),
                "pending": int(g.get("pending", 0)),
                "last_delivered_id": _s(g.get("last-delivered-id", "")),
                "lag": int(lag) if lag is not None else None,
            }
    return None


async def _consumers(redis: Redis, stream: str, group: str) -> list[dict[str, Any]]:
    try:
        rows = await redis.xinfo_consumers(stream, group)
    except ResponseError:
        return []
    return [
        {
            "name": _s(c.get("name")),
            "pending": int(c.get("pending", 0)),
            "idle_ms": int(c.get("idle", 0)),
        }
        for c in rows
    ]


async def _pending(
    redis: Redis, config: StreamsConfig, stream: str, group: str
) -> list[dict[str, Any]]:
    try:
        rows = await redis.xpending_range(stream, group, min="-", max="+", count=_PENDING_SHOWN)
    except ResponseError:
        return []
    out: list[dict[str, Any]] = []
    lease = config.executor.lease_ms
    for row in rows:
        entry_id = _s(row["message_id"])
        item: dict[str, Any] = {
            "entry_id": entry_id,
            "stream": stream,
            "owner": _s(row["consumer"]),
            "idle_ms": int(row["time_since_delivered"]),
            "deliveries": int(row["times_delivered"]),
            "request_id": None,
            "kind": None,
            "playbook": None,
        }
        item["orphaned"] = item["idle_ms"] > lease  # waiting for adoption
        found = await redis.xrange(stream, min=entry_id, max=entry_id, count=1)
        if found:
            try:
                job = decode_job(found[0][1].get(b"job", b""))
            except (DecodeError, ValueError):
                pass
            else:
                item.update(request_id=job.request_id, kind=job_kind(job), playbook=job.playbook)
        out.append(item)
    return out


async def _executors(
    redis: Redis, config: StreamsConfig, trust: Trust
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(executors whose presence hash an executor key signed, those no key signed)."""
    out: list[dict[str, Any]] = []
    forged: list[dict[str, Any]] = []
    clock = RedisClock()  # executors write "seen" on Redis's clock: compare on it too
    await clock.sync(redis)
    now = clock.now()
    async for raw_key in redis.scan_iter(match=config.executor_key("*"), count=100):
        raw = await redis.hgetall(raw_key)  # type: ignore[misc]
        if not raw:
            continue
        key = _s(raw_key)
        try:
            verify_presence(trust, key, raw)
        except KeyMaterialError as exc:
            forged.append({"key": key, "reason": str(exc)})
            continue
        h = {_s(k): _s(v) for k, v in raw.items()}
        try:
            seen = float(h.get("seen", "0") or 0)
        except ValueError:
            seen = 0.0
        out.append(
            {
                "name": h.get("name", _s(key)),
                "host": h.get("host"),
                "pid": int(h["pid"]) if h.get("pid", "").isdigit() else None,
                "state": h.get("state", "running"),
                "concurrency": int(h["concurrency"]) if h.get("concurrency") else None,
                "running": int(h.get("running", "0") or 0),
                "requests": [r for r in h.get("requests", "").split(",") if r],
                "completed": int(h.get("completed", "0") or 0),
                "seen_ago_s": round(now - seen, 3) if seen else None,
                "playbooks": [p for p in h.get("playbooks", "").split(",") if p],
            }
        )
    return sorted(out, key=lambda e: str(e["name"])), sorted(forged, key=lambda e: e["key"])


async def _stream_summary(
    redis: Redis, config: StreamsConfig, stream: str, group: str
) -> tuple[bool, dict[str, Any]]:
    """One consumed stream: whether it exists, and its length, its group, the group's
    consumers and its dead letters."""
    exists = bool(await redis.exists(stream))
    dead = config.dead_key(stream)
    return exists, {
        "stream": stream,
        "length": int(await redis.xlen(stream)) if exists else 0,
        "group": group,
        "group_info": await _group_info(redis, stream, group) if exists else None,
        "consumers": await _consumers(redis, stream, group) if exists else [],
        "dead_stream": dead,
        "dead_letters": int(await redis.xlen(dead)),
    }


async def _requests(redis: Redis, config: StreamsConfig) -> dict[str, Any]:
    """``deploy.requests`` (what the platform asks) and its group: the orchestrators."""
    _, summary = await _stream_summary(
        redis, config, config.streams.requests, config.groups.orchestrators
    )
    return summary


async def snapshot(
    redis: Redis,
    config: StreamsConfig,
    trust: Trust,
    running_hosts: RunningHosts | None = None,
) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` object).

    Each running request carries its hosts' progress (``hosts``: status and counts
    per host, ``task``: the task running now), read by ``running_hosts`` (pass the
    same one across ``--watch`` refreshes so only new events are read). Executors
    count only with a presence hash an executor key signed (``trust``)."""
    group = config.groups.executors
    streams: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    for stream in config.job_streams:
        exists, summary = await _stream_summary(redis, config, stream, group)
        streams.append(summary)
        if exists:
            running += await _pending(redis, config, stream, group)
    running_hosts = running_hosts or RunningHosts(config, trust)
    progress = await running_hosts.hosts(
        redis, [p["request_id"] for p in running if p["request_id"]]
    )
    for p in running:
        p.update(progress.get(p["request_id"] or "", {"task": None, "partial": False, "hosts": {}}))
    info = await redis.info("server")
    requests = await _requests(redis, config)
    executors, unverified = await _executors(redis, config, trust)
    return {
        "ts": time.time(),
        "redis": {
            "version": _s(info.get("redis_version", "")),
            "uptime_s": int(info.get("uptime_in_seconds", 0)),
        },
        "lease_ms": config.executor.lease_ms,
        "streams": streams,
        "requests": requests,
        "orchestrators": requests["consumers"],
        "dead_letters": sum(s["dead_letters"] for s in streams),
        "executors": executors,
        "unverified_executors": unverified,
        "running": running,
    }


def render_status(snap: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    t = Table(title="streams", title_justify="left", expand=False)
    for col in ("stream", "group", "length", "lag", "pending", "consumers", "dead letters"):
        t.add_column(col)
    for s in [*snap["streams"], snap["requests"]]:
        g = s["group_info"] or {}
        lag = g.get("lag")
        t.add_row(
            s["stream"],
            s["group"],
            str(s["length"]),
            "-" if lag is None else str(lag),
            str(g.get("pending", 0)),
            ", ".join(
                f"{c['name']} (pending {c['pending']}, idle {_age(c['idle_ms'] / 1000)})"
                for c in s["consumers"]
            )
            or "-",
            Text(str(s["dead_letters"]), style="bold red" if s["dead_letters"] else ""),
        )
    parts.append(t)
    e = Table(title="executors", title_justify="left")
    for col in ("name", "host", "pid", "state", "running", "completed", "seen"):
        e.add_column(col)
    for ex in snap["executors"]:
        e.add_row(
            ex["name"],
            ex["host"] or "-",
            str(ex["pid"] or "-"),
            ex["state"],
            f"{ex['running']}/{ex['concurrency'] or '?'}",
            str(ex["completed"]),
            _age(ex["seen_ago_s"]) + " ago",
        )
    if not snap["executors"]:
        parts.append(Text("executors: none alive", style="bold red"))
    else:
        parts.append(e)
    for bad in snap["unverified_executors"]:
        parts.append(
            Text(
                f"unverified presence ignored: {clean(bad['key'])} ({clean(bad['reason'])})",
                style="yellow",
            )
        )
    r = Table(title="running (pending entries)", title_justify="left")
    r.add_column("request", no_wrap=True)
    for col in ("kind", "playbook", "owner", "idle", "deliveries", "task", "hosts", ""):
        r.add_column(col)
    for p in snap["running"]:
        r.add_row(
            p["request_id"] or p["entry_id"],
            p["kind"] or "?",
            p["playbook"] or "?",
            p["owner"],
            _age(p["idle_ms"] / 1000),
            str(p["deliveries"]),
            p["task"] or "-",
            (format_hosts(p["hosts"]) or "-") + (" (partial)" if p["partial"] else ""),
            Text("orphaned: awaiting adoption", style="yellow") if p["orphaned"] else "",
        )
    parts.append(r if snap["running"] else Text("running: nothing"))
    redis = snap["redis"]
    parts.append(
        Text(f"redis {redis['version']}, up {_age(redis['uptime_s'])}; lease {snap['lease_ms']} ms")
    )
    return Group(*parts)


@click.command()
@click.option("--json", "json_out", is_flag=True, help="One JSON object (per refresh).")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2),
    default=2.0,
    show_default=True,
    envvar="DEPLOYSTREAM_STATUS_INTERVAL",
    show_envvar=True,
    help="Seconds between refreshes with --watch.",
)
@click.pass_obj
def status(app: App, json_out: bool, watch: bool, interval: float) -> int:
    """Streams and their groups (executors; deploy.requests: orchestrators), executors,
    running requests (with each host's status and counts so far), dead letters."""

    async def main() -> int:
        trust = app.trust()
        redis = await app.redis()
        console = Console()
        if not console.is_terminal:  # a pipe or a log: no wrapping of ids at 80 columns
            console = Console(width=200)
        hosts = RunningHosts(app.config, trust)  # kept across refreshes: reads only new events
        try:
            if not watch:
                snap = await snapshot(redis, app.config, trust)
                if json_out:
                    _echo_json(snap)
                else:
                    console.print(render_status(snap))
                return EXIT_OK
            if json_out or not console.is_terminal:
                while True:
                    snap = await snapshot(redis, app.config, trust, hosts)
                    if json_out:
                        _echo_json(snap)
                    else:
                        console.print(render_status(snap))
                    await anyio.sleep(interval)
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(
                        render_status(await snapshot(redis, app.config, trust, hosts)),
                        refresh=True,
                    )
                    await anyio.sleep(interval)
        finally:
            await redis.aclose()

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        return EXIT_OK


# ---------------------------------------------------------------------- dlq
@click.group()
def dlq() -> None:
    """Dead-letter streams: entries that could not be run, with the reason."""


@dlq.command("list")
@click.option("--json", "json_out", is_flag=True, help="One JSON object per dead letter.")
@click.pass_obj
def dlq_list(app: App, json_out: bool) -> int:
    """List dead-lettered entries with their reasons (oldest first per stream)."""

    async def main() -> int:
        trust = app.trust()
        redis = await app.redis()
        try:
            dead = await StreamClient(redis, app.config, trust=trust).dead_letters()
        finally:
            await redis.aclose()
        rows = []
        for d in dead:
            unproven = d.proof(trust)
            rows.append(d.as_dict() | {"verified": unproven is None, "unverified": unproven})
        if json_out:
            for row in rows:
                _echo_json(row)
            return EXIT_OK
        if not rows:
            click.echo("no dead letters")
            return EXIT_OK
        for row in rows:
            dead_at = row["dead_at"]
            when = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(dead_at)))
                if isinstance(dead_at, float)
                else "?"
            )
            flag = "" if row["verified"] else "  UNVERIFIED (not replayable)"
            click.echo(
                clean(
                    f"{row['entry_id']}  {row['source_stream']}  "
                    f"request {row['request_id'] or '(unreadable)'}  "
                    f"{row['kind'] or '?'}/{row['playbook'] or '?'}  "
                    f"deliveries {row['delivery_count']}  at {when}{flag}"
                )
            )
            if not row["verified"]:
                click.echo(clean(f"    not written by a trusted executor: {row['unverified']}"))
            click.echo(clean(f"    reason: {row['reason']}"))
        click.echo("replay one with: deployctl dlq replay ENTRY_ID")
        return EXIT_OK

    return anyio.run(main)


@dlq.command("replay")
@click.argument("entry_id", type=ENTRY_ID)
@click.option("--json", "json_out", is_flag=True, help="One JSON object with the new entry.")
@click.pass_obj
def dlq_replay(app: App, entry_id: str, json_out: bool) -> int:
    """Re-enqueue a dead letter as a new delivery of the same request.

    The entry leaves the dead-letter stream and goes back to its job stream; the
    request gets a new ``submitted`` event and runs again (its attempts numbered
    after the old ones). Follow it with ``deployctl tail REQUEST_ID``.
    """

    async def main() -> int:
        trust = app.trust()
        redis = await app.redis()
        try:
            client = StreamClient(redis, app.config, trust=trust)
            dead, new_id = await client.replay_dead_letter(entry_id)
        finally:
            await redis.aclose()
        row = dead.as_dict()
        if json_out:
            _echo_json(
                {
                    "replayed": entry_id,
                    "entry_id": new_id,
                    "stream": row["source_stream"],
                    "request_id": row["request_id"],
                }
            )
        else:
            click.echo(
                f"replayed {entry_id} as {new_id} on {row['source_stream']}"
                + (f" (request {row['request_id']})" if row["request_id"] else "")
            )
        return EXIT_OK

    return anyio.run(main)
