"""Redis Cluster: a cluster URL gets a ``RedisCluster`` client; the key layout must
put every deploystream key in one hash slot.

**URL.** ``redis+cluster://host:port`` (``rediss+cluster://`` for TLS), or any
``redis://`` URL with ``?cluster=1``. One seed node is enough; the client discovers
the others and follows MOVED/ASK.

**Why one slot.** The steps users trust are single Lua scripts that touch the job
stream *and* the request's keys at once: the fenced PUBLISH of a batch of events
and the FINISH that writes the result and XACKs the job (ownership is checked on
the job stream's pending list in the same atomic step), the dead-letter step, and
the client's submit (idempotency key, ``submitted`` event, job entry). Redis Cluster
runs a script only when all its keys map to one slot. So, as BullMQ does, the
cluster layout hash-tags every name with one tag (``streams.toml``: ``deploy =
"{ds}ansible.deploy"``, ``events-prefix = "{ds}ansible.events"``, …; Redis hashes
only the first ``{…}`` of a key, so ``{ds}ansible.events:{<request_id>}`` lands in
slot ``ds``). :func:`check_layout` refuses any other layout before it can fail
half-way with CROSSSLOT.

What the cluster then gives: failover (replicas), and sharing a cluster with other
tenants. What it does not give: spreading deploystream's own load over several
masters -- all of it is on the master that owns the tag's slot. Spreading per
request (``{<request_id>}`` alone) needs a fence kept in the request's slot instead
of the job stream's pending list; see ``docs/benchmarks.md`` (Redis Cluster).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from contracts import StreamsConfig
from contracts.config import ConfigError
from deploystream.errors import BadInputError

_TAG = re.compile(r"\{([^{}]*)\}")


def is_cluster_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme.endswith("+cluster"):
        return True
    return dict(parse_qsl(parts.query)).get("cluster", "").lower() in ("1", "true", "yes")


def node_url(url: str) -> str:
    """The seed node's plain URL: ``+cluster`` and ``cluster=`` removed, no db path."""
    parts = urlsplit(url)
    scheme = parts.scheme.removesuffix("+cluster")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"])
    return urlunsplit((scheme, parts.netloc, "", query, ""))


def connect_cluster(url: str, *, max_connections: int = 64, **kwargs: Any) -> RedisCluster:
    """A cluster client whose replies stay bytes, like :func:`redis_conn.connect`."""
    return RedisCluster.from_url(
        node_url(url),
        max_connections=max_connections,
        socket_keepalive=True,
        socket_connect_timeout=5,
        **kwargs,
    )


def hash_tag(key: str) -> str:
    """What Redis hashes: the first non-empty ``{…}`` of the key, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def layout_keys(config: StreamsConfig, request_id: str = "r1") -> dict[str, str]:
    """Every kind of key one Lua script may combine, for one request."""
    s = config.streams
    return {
        "deploy": s.deploy,
        "provision": s.provision,
        "deploy dead letters": config.dead_key(s.deploy),
        "provision dead letters": config.dead_key(s.provision),
        "events": config.events_key(request_id),
        "publish watermark": f"{s.events_prefix}.published:{{{request_id}}}",
        "idempotency": config.idempotency_key("k1"),
        "job lock": config.lock_keys(f"deploy:p@{request_id}")[0],
        "job lock waiters": config.lock_keys(f"deploy:p@{request_id}")[1],
        "consumed-job record": config.consumed_key(request_id, "0" * 32),
    }


def check_layout(config: StreamsConfig) -> int:
    """Raise :class:`ConfigError` unless all script keys share one slot; return it."""
    keys = layout_keys(config)
    slots = {name: key_slot(key.encode()) for name, key in keys.items()}
    other = layout_keys(config, "another-request")
    if len(set(slots.values())) == 1 and key_slot(other["events"].encode()) in slots.values():
        return next(iter(slots.values()))
    raise ConfigError(
        "Redis Cluster: deploystream's atomic steps combine the job streams, dead letters, "
        "event streams and idempotency keys, so all names need one hash tag, e.g. "
        'deploy = "{ds}ansible.deploy", events-prefix = "{ds}ansible.events" (see '
        "deploystream/cluster.py); slots now: " + ", ".join(f"{k}={v}" for k, v in slots.items())
    )


def require_layout(url: str, config: StreamsConfig) -> None:
    """At an entrypoint: a cluster URL with a multi-slot layout is bad input, said
    before anything is submitted or run (not a CROSSSLOT error half-way through)."""
    if not is_cluster_url(url):
        return
    try:
        check_layout(config)
    except ConfigError as exc:
        raise BadInputError(str(exc)) from exc
