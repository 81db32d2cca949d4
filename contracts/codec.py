"""One encoder and one typed decoder per union, built once and reused.

Entries on the wire are JSON (readable with ``redis-cli``) encoded by msgspec.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from contracts.control import Control
from contracts.events import Event
from contracts.jobs import Job
from contracts.requests import DeployRequest

# Refuse absurd payloads before decoding them (a 10 MB field is hostile, not a job).
MAX_JOB_BYTES = 1 << 20

_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(Job)
_event_decoder = msgspec.json.Decoder(Event)
_control_decoder = msgspec.json.Decoder(Control)
_request_decoder = msgspec.json.Decoder(DeployRequest)


class DecodeError(ValueError):
    """A payload that is not a valid contract value; the message says why."""


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_job(data: bytes | str) -> Job:
    if len(data) > MAX_JOB_BYTES:
        raise DecodeError(f"job payload too large ({len(data)} bytes > {MAX_JOB_BYTES})")
    try:
        job: Job = _job_decoder.decode(data)
        return job
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from exc


def decode_event(data: bytes | str) -> Event:
    try:
        event: Event = _event_decoder.decode(data)
        return event
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from exc


def decode_control(data: bytes | str) -> Control:
    try:
        return _control_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from exc


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def decode_request(data: bytes | str) -> DeployRequest:
    if len(data) > MAX_JOB_BYTES:
        raise DecodeError(f"request payload too large ({len(data)} bytes)")
    try:
        request: DeployRequest = _request_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from exc
    except RecursionError as exc:
        raise DecodeError("nesting too deep") from exc
    return request


_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def peek_request_id(payload: bytes | None) -> str | None:
    """Best effort: the request id of a payload being rejected, if it has a sane one."""
    if not payload or len(payload) > MAX_JOB_BYTES:
        return None
    try:
        raw = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    rid = raw.get("request_id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, str) and _REQUEST_ID.match(rid) else None
