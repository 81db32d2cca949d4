"""What live executors advertise, read back: their playbooks and declared extra vars.

Each executor keeps a presence hash ``deploystream.executor:<name>`` fresh (written by
``executor.loops``; it expires :func:`presence_ttl_s` after the last refresh) with,
among others, ``state``, ``concurrency``, ``running``, ``playbooks`` (comma
separated), ``vars`` (its declarations: :func:`contracts.playbook_vars.encode_offers`)
and ``file_repos`` (1 when it clones ``file://`` repositories).

Two sides read it:

- the submit side refuses a job whose playbook no live executor offers, whose extra
  vars a live executor offering it does not declare, or whose ``file://`` repository
  none accepts (:meth:`LiveOffers.check`); the CLI also turns ``--extra-var K=V``
  text into the declared types;
- an executor that lacks a job's playbook looks for one that has it to hand the job
  to (:meth:`LiveOffers.targets`; ``executor.handover``).

How long ago a hash was refreshed is measured by Redis (its remaining TTL), not by
comparing clocks of different machines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import DeployJob, Job, RuleError, StreamsConfig
from contracts.playbook_vars import Offers, PlaybookVars, decode_offers
from deploystream.errors import BadInputError, KeyMaterialError
from deploystream.keys import Trust
from deploystream.proofs import verify_presence


def presence_ttl_s(config: StreamsConfig) -> int:
    """A presence hash expires this long after its executor last refreshed it."""
    return max(3, config.executor.lease_ms * 3 // 1000)


def presence_period_s(config: StreamsConfig) -> float:
    """How often an executor refreshes its presence hash."""
    return min(5.0, presence_ttl_s(config) / 3)


def _text(raw: dict[bytes, bytes], name: str) -> str:
    return raw.get(name.encode(), b"").decode("utf-8", "replace")


def _int(raw: dict[bytes, bytes], name: str) -> int:
    try:
        return int(_text(raw, name) or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Presence:
    """One live executor, as its presence hash says."""

    name: str
    state: str
    concurrency: int
    running: int
    age_s: float  # since its last refresh (Redis clock)
    playbooks: tuple[str, ...]
    declared: Offers | None  # None: not advertised (an older executor) or unreadable
    file_repos: bool | None = None  # None: not advertised

    @classmethod
    def of(cls, name: str, raw: dict[bytes, bytes], age_s: float) -> Presence:
        declared: Offers | None = None
        if raw.get(b"vars"):
            try:
                declared = decode_offers(raw[b"vars"])
            except (msgspec.DecodeError, msgspec.ValidationError):
                declared = None
        return cls(
            name=name,
            state=_text(raw, "state") or "running",
            concurrency=_int(raw, "concurrency"),
            running=_int(raw, "running"),
            age_s=age_s,
            playbooks=tuple(p for p in _text(raw, "playbooks").split(",") if p),
            declared=declared,
            file_repos=_text(raw, "file_repos") == "1" if b"file_repos" in raw else None,
        )

    @property
    def free(self) -> int:
        return max(0, self.concurrency - self.running)


async def read_presence(redis: Redis, config: StreamsConfig, trust: Trust) -> list[Presence]:
    """Every consumer of the executors' group whose presence hash exists (a dead
    executor's expires) and carries an executor's signature (one a Redis credential
    made up offers nothing and takes no hand-over). Found through the group, not a
    ``SCAN`` of the keyspace."""
    names: set[str] = set()
    for stream in config.job_streams:
        try:
            consumers = await redis.xinfo_consumers(stream, config.groups.executors)
        except ResponseError:  # no stream or group yet: no executor has started
            continue
        for c in consumers:
            name = c["name"]
            names.add(name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name))
    if not names:
        return []
    ordered = sorted(names)
    pipe = redis.pipeline(transaction=False)
    for name in ordered:
        pipe.hgetall(config.executor_key(name))
        pipe.pttl(config.executor_key(name))
    replies = await pipe.execute()
    ttl_ms = presence_ttl_s(config) * 1000
    out: list[Presence] = []
    for i, name in enumerate(ordered):
        raw, left_ms = replies[2 * i], replies[2 * i + 1]
        if not raw:
            continue
        try:
            verify_presence(trust, config.executor_key(name), raw)
        except KeyMaterialError:
            continue
        age_s = max(0.0, (ttl_ms - int(left_ms)) / 1000) if int(left_ms) >= 0 else 0.0
        out.append(Presence.of(name, raw, age_s))
    return out


@dataclass(frozen=True)
class Labels:
    """How a refusal names what was refused: the CLI's options, or the job's fields."""

    playbook: str = "playbook"
    repo: str = "repo"
    var: str = "extra var"


CLI_LABELS = Labels(playbook="--playbook", repo="--repo", var="--extra-var")


@dataclass(frozen=True)
class LiveOffers:
    """The playbooks (and their declarations) live executors offer.

    Every check passes when no live executor announces anything: a job submitted
    then waits for an executor (which checks it again)."""

    executors: tuple[Presence, ...]

    @classmethod
    async def read(cls, redis: Redis, config: StreamsConfig, trust: Trust) -> LiveOffers:
        return cls(tuple(await read_presence(redis, config, trust)))

    def playbooks(self) -> set[str]:
        return {p for e in self.executors for p in e.playbooks}

    def check_playbook(self, playbook: str, labels: Labels = Labels()) -> None:
        offered = self.playbooks()
        if offered and playbook not in offered:
            raise BadInputError(
                f"{labels.playbook}: unknown playbook {playbook!r}; executors offer: "
                f"{', '.join(sorted(offered))}"
            )

    def _declarations(self, playbook: str) -> Iterable[PlaybookVars]:
        for e in self.executors:
            if playbook in e.playbooks and e.declared is not None and playbook in e.declared:
                yield e.declared[playbook]

    def check(self, job: Job, labels: Labels = Labels()) -> None:
        """The job's playbook is offered, every live executor offering it accepts its
        extra vars (the job may land on any of them), and a ``file://`` repository is
        accepted by some live executor."""
        self.check_playbook(job.playbook, labels)
        try:
            for declared in self._declarations(job.playbook):
                declared.check(job.playbook, job.extra_vars, label=labels.var)
        except RuleError as exc:
            raise BadInputError(str(exc)) from exc
        repo = job.repo if isinstance(job, DeployJob) else ""
        accepts = {e.file_repos for e in self.executors if e.file_repos is not None}
        if repo.startswith("file:") and accepts and True not in accepts:
            raise BadInputError(
                f"{labels.repo}: no live executor accepts file:// repositories (executor "
                "--allow-file-repos); use https://, ssh://, git@host:path or owner/name"
            )

    def typed_vars(
        self, playbook: str, texts: dict[str, Any], labels: Labels = CLI_LABELS
    ) -> dict[str, Any]:
        """Command-line ``K=V`` texts as the declared types (checked); they stay text
        when no live executor says what the playbook declares."""
        self.check_playbook(playbook, labels)
        declared = next(iter(self._declarations(playbook)), None)
        if declared is None:
            return dict(texts)
        try:
            return declared.from_texts(playbook, texts, label=labels.var)
        except RuleError as exc:
            raise BadInputError(str(exc)) from exc

    def targets(self, playbook: str, *, exclude: str, fresh_s: float) -> list[Presence]:
        """Running executors (refreshed within ``fresh_s``) that offer ``playbook``,
        the one with the most free slots first."""
        found = [
            e
            for e in self.executors
            if playbook in e.playbooks
            and e.name != exclude
            and e.state == "running"
            and e.age_s <= fresh_s
        ]
        return sorted(found, key=lambda e: (-e.free, e.age_s, e.name))
