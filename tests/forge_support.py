"""Helpers for the forgery tests: write events as an executor would (signed) or as an
attacker with only a Redis credential can (unsigned, or signed with a key nobody trusts)."""

from __future__ import annotations

from typing import Any

import msgspec
import redis

from contracts import Event, encode
from deploystream.keys import Signer
from deploystream.proofs import sign_batch


def _tag(event: Event) -> str:
    return str(msgspec.inspect.type_info(type(event)).tag)  # type: ignore[attr-defined]


def write_batch(
    client: redis.Redis, key: str, events: list[Event], signer: Signer | None = None
) -> None:
    """One batch in one MULTI (atomic, like the executor's PUBLISH script); signed by
    ``signer`` when given, else carrying a made-up signature."""
    datas = [encode(e) for e in events]
    sig, kid = (
        sign_batch(signer, key, datas) if signer is not None else ("AAAA" * 22, "0123456789abcdef")
    )
    pipe = client.pipeline(transaction=True)
    for i, (event, data) in enumerate(zip(events, datas, strict=True)):
        fields: dict[Any, Any] = {"type": _tag(event), "seq": event.seq, "data": data}
        if i == len(events) - 1:
            fields |= {"n": len(events), "sig": sig, "kid": kid}
        pipe.xadd(key, fields)
    pipe.execute()


def write_plain(client: redis.Redis, key: str, event: Event) -> None:
    """An entry the way an attacker with ``XADD`` on ``ansible.events:*`` writes it."""
    client.xadd(key, {"type": _tag(event), "seq": event.seq, "data": encode(event)})
