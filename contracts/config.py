"""Typed, strict configuration decoded from ``streams.toml``.

A typo is an error naming the key (``forbid_unknown_fields``), a bad value an error
naming its path. ``REDIS_URL`` and command-line flags override the file; that is done
once, at the entrypoint, with :func:`with_overrides`.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

Positive = Annotated[int, Meta(ge=1)]
# Braces allowed: a Redis Cluster layout hash-tags every name (deploystream/cluster.py).
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:{}-]{1,100}$")]


class ConfigError(ValueError):
    """``streams.toml`` (or an override) is not valid; the message names the key."""


class _Section(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class RedisSection(_Section, frozen=True):
    url: str = "redis://127.0.0.1:6379/0"
    # Services re-check Redis's settings (maxmemory-policy must be noeviction) this often.
    check_interval_s: Annotated[float, Meta(ge=0.1)] = 30.0


class StreamsSection(_Section, frozen=True):
    requests: Name = "deploy.requests"
    deploy: Name = "ansible.deploy"
    provision: Name = "ansible.provision"
    events_prefix: Name = "ansible.events"
    dead_suffix: Name = ".dead"
    handover_suffix: Name = ".handover"
    control: Name = "ansible.control"
    idempotency_prefix: Name = "deploystream.idem"
    executors_prefix: Name = "deploystream.executor"
    locks_prefix: Name = "deploystream.lock"
    consumed_prefix: Name = "deploystream.consumed"


class GroupsSection(_Section, frozen=True):
    executors: Name = "executors"
    orchestrators: Name = "orchestrators"


class ExecutorSection(_Section, frozen=True):
    concurrency: Positive = 4
    lease_ms: Annotated[int, Meta(ge=100)] = 30_000
    max_deliveries: Positive = 3
    reclaim_interval_ms: Annotated[int, Meta(ge=50)] = 5_000
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 30.0
    block_ms: Annotated[int, Meta(ge=10)] = 2_000
    # Playbooks run this much nicer than the executor (0-19): on a saturated CPU the
    # executor still renews leases and publishes events on time.
    playbook_nice: Annotated[int, Meta(ge=0, le=19)] = 10
    # A job waiting for its project's (or server's) lock asks again this often.
    lock_poll_ms: Annotated[int, Meta(ge=10)] = 250
    # A run whose events cannot be published this long (Redis out of memory or away)
    # is stopped rather than left running unseen.
    publish_stall_s: Annotated[float, Meta(ge=0.1)] = 30.0


class RetentionSection(_Section, frozen=True):
    jobs_maxlen: Positive = 100_000
    # Events one attempt of a request may publish, its result included. Event streams
    # are never trimmed; past this the executor publishes one ``events_capped`` event,
    # drops the rest and says how many in the result (``events_dropped``).
    request_max_events: Annotated[int, Meta(ge=16)] = 100_000
    events_ttl_s: Positive = 3600
    dead_maxlen: Positive = 10_000
    control_maxlen: Positive = 10_000
    idempotency_ttl_s: Positive = 86_400
    output_line_max: Positive = 4096
    # A job is valid this long after submit (Redis clock); longer than any queue wait.
    job_validity_s: Positive = 86_400
    # How far two Redis servers' clocks may disagree (a failover, Cluster nodes).
    clock_skew_s: Annotated[int, Meta(ge=0)] = 60


class StreamsConfig(_Section, frozen=True):
    redis: RedisSection = RedisSection()
    streams: StreamsSection = StreamsSection()
    groups: GroupsSection = GroupsSection()
    executor: ExecutorSection = ExecutorSection()
    retention: RetentionSection = RetentionSection()

    @property
    def job_streams(self) -> tuple[str, str]:
        return (self.streams.deploy, self.streams.provision)

    def events_key(self, request_id: str) -> str:
        # The braces are a Redis Cluster hash tag: all keys of a request share a slot.
        return f"{self.streams.events_prefix}:{{{request_id}}}"

    def dead_key(self, job_stream: str) -> str:
        return f"{job_stream}{self.streams.dead_suffix}"

    def handover_key(self, job_stream: str, executor: str) -> str:
        """An executor's inbox of entries handed to it (``executor.handover``)."""
        return f"{job_stream}{self.streams.handover_suffix}:{executor}"

    def idempotency_key(self, key: str) -> str:
        return f"{self.streams.idempotency_prefix}:{key}"

    def consumed_key(self, request_id: str, digest: str) -> str:
        # An executor's record of a consumed job (same hash slot as the request's events).
        return f"{self.streams.consumed_prefix}:{{{request_id}}}:{digest}"

    def executor_key(self, name: str) -> str:
        return f"{self.streams.executors_prefix}:{name}"

    def lock_keys(self, scope: str) -> tuple[str, str]:
        """The lock of one scope (e.g. ``deploy:myapp@localhost``) and its waiters."""
        prefix = self.streams.locks_prefix
        return f"{prefix}:held:{scope}", f"{prefix}:queue:{scope}"

    def stream_for_kind(self, kind: str) -> str:
        if kind == "deploy":
            return self.streams.deploy
        if kind == "provision":
            return self.streams.provision
        raise ConfigError(f"no job stream for kind {kind!r}")


def default_config_text() -> str:
    """The ``streams.toml`` shipped with the package (or the checkout's)."""
    packaged = resources.files("contracts").joinpath("streams.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "streams.toml").read_text(encoding="utf-8")


def parse_config(text: str, source: str = "streams.toml") -> StreamsConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return msgspec.convert(raw, StreamsConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def load_config(path: str | Path | None = None) -> StreamsConfig:
    if path is None:
        return parse_config(default_config_text())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from exc
    return parse_config(text, str(p))


def with_overrides(
    config: StreamsConfig,
    *,
    redis_url: str | None = None,
    concurrency: int | None = None,
    lease_ms: int | None = None,
    shutdown_grace_s: float | None = None,
) -> StreamsConfig:
    """Environment/flag overrides applied once at the entrypoint; validated like the file."""
    raw = msgspec.to_builtins(config)
    if redis_url:
        raw["redis"]["url"] = redis_url
    if concurrency is not None:
        raw["executor"]["concurrency"] = concurrency
    if lease_ms is not None:
        raw["executor"]["lease-ms"] = lease_ms
    if shutdown_grace_s is not None:
        raw["executor"]["shutdown-grace-s"] = shutdown_grace_s
    try:
        return msgspec.convert(raw, StreamsConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"override: {exc}") from exc
