"""Intake: turn a raw job-stream entry into a trusted job, or a rejection reason.

Order matters: size first, then the signature, before the payload is decoded, so a
forged entry is never parsed into a job; then the schema, the rules
(:mod:`contracts.rules`), the playbook allow-list and the extra vars that playbook
declares (:mod:`contracts.playbook_vars`), the signed expiry's presence (it is checked
against Redis's clock in START, see :mod:`executor.freshness`) and the binding of
every sealed value to this job (:mod:`executor.unseal`). Pure except for checking
that the playbook's file is still there.

:func:`examine` never raises, whatever the entry holds (an exception would leave
the entry pending, to be redelivered and crash again): every outcome is
:class:`Accepted`, :class:`Rejected` with a short, redacted reason, or
:class:`NotOffered` -- a valid job for a playbook this executor does not have, which
is not a reason to refuse it (another executor may have it: ``executor.handover``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import msgspec

from contracts import DecodeError, Job, RuleError, check_job, decode_job
from contracts.codec import MAX_JOB_BYTES
from contracts.entries import job_digest
from deploystream.errors import KeyMaterialError
from deploystream.keys import ExecutorKeys
from deploystream.redact import DEFAULT as redact
from executor.settings import ExecutorSettings
from executor.unseal import UnsealError, open_secrets

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Reasons land in a dead letter, a result event and a log line: keep them short.
REASON_MAX = 500


@dataclass(frozen=True)
class Accepted:
    job: Job
    playbook: Path
    digest: str  # names the job in the consumed-job records (contracts.entries)


@dataclass(frozen=True)
class NotOffered:
    """Signed and valid, but for a playbook this executor does not have."""

    job: Job


@dataclass(frozen=True)
class Rejected:
    reason: str
    request_id: str | None

    def __post_init__(self) -> None:
        reason = redact(self.reason)
        if len(reason) > REASON_MAX:
            reason = reason[: REASON_MAX - 1] + "…"
        object.__setattr__(self, "reason", reason)


def readable_request_id(payload: bytes | None) -> str | None:
    """Best effort: the request id of an entry we are rejecting, if it has a sane one."""
    if not payload or len(payload) > MAX_JOB_BYTES:
        return None
    try:
        raw = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, MemoryError):
        return None
    rid = raw.get("request_id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, str) and _REQUEST_ID.match(rid) else None


def examine(
    stream: str,
    fields: dict[bytes, bytes],
    keys: ExecutorKeys,
    settings: ExecutorSettings,
) -> Accepted | Rejected | NotOffered:
    try:
        return _examine(stream, fields, keys, settings)
    except Exception as exc:  # a bug here must not turn an entry into a poison pill
        return Rejected(f"invalid entry: {type(exc).__name__}", None)


def _examine(
    stream: str,
    fields: dict[bytes, bytes],
    keys: ExecutorKeys,
    settings: ExecutorSettings,
) -> Accepted | Rejected | NotOffered:
    payload = fields.get(b"job")
    if payload is None:
        return Rejected("malformed entry: no 'job' field", None)
    if len(payload) > MAX_JOB_BYTES:
        return Rejected(
            f"invalid job: payload too large ({len(payload)} bytes > {MAX_JOB_BYTES})", None
        )
    try:
        keys.verify(
            stream,
            payload,
            fields.get(b"sig", b"").decode("ascii", "replace"),
            fields.get(b"kid", b"").decode("ascii", "replace"),
        )
    except KeyMaterialError as exc:
        return Rejected(f"signature: {exc}", readable_request_id(payload))
    try:
        job = decode_job(payload)
    except DecodeError as exc:
        return Rejected(f"invalid job: {exc}", readable_request_id(payload))
    except RecursionError:
        return Rejected("invalid job: nesting too deep", None)
    try:
        check_job(job, allow_file_repos=settings.allow_file_repos)
    except RuleError as exc:
        return Rejected(f"rule: {exc}", job.request_id)
    refusal = settings.local_services_refusal(job)
    if refusal is not None:
        return Rejected(f"refused: {refusal}", job.request_id)
    playbook = settings.catalog.get(job.playbook)
    if playbook is None:
        return NotOffered(job)
    try:
        playbook.declared.check(job.playbook, job.extra_vars)
    except RuleError as exc:
        return Rejected(f"rule: {exc}", job.request_id)
    if job.expires_at is None:
        return Rejected(
            "rule: the job carries no signed expiry (signed by an older version): submit it again",
            job.request_id,
        )
    try:
        open_secrets(keys, job)  # refused here, before anything runs; values dropped
    except UnsealError as exc:
        return Rejected(f"secrets: {exc}", job.request_id)
    return Accepted(job, playbook.path, job_digest(payload))
