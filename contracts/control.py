"""Broadcast commands on the control stream (every executor reads them)."""

from __future__ import annotations

from msgspec import Struct


class Cancel(Struct, kw_only=True, tag_field="op", tag="cancel"):
    request_id: str
    by: str
    ts: float
    reason: str = ""


Control = Cancel
