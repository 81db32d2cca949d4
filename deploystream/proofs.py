"""Proof of who wrote it: executors' event batches, dead letters and presence; the
orchestrator's cancels. What is signed, and how a reader checks it.

Both Redis users may write where the other reads (``XADD`` to ``ansible.events:*``,
``HSET`` of a presence hash, ``XADD`` to a dead-letter stream), so a Redis credential
alone must not be able to speak for the other side. Each claim carries an Ed25519
signature (:class:`deploystream.keys.Signer`) and the id of the key that made it.

**Events: one signature per published batch, not per event.** The publisher writes
whatever has queued as one atomic batch (one fenced script call). The batch's last
entry carries ``n`` (entries in the batch), ``sig`` and ``kid``; the signature covers
the events key and a SHA-256 over the batch's ``data`` values (each of which names
its request, attempt and seq). Measured here with PyNaCl on a 200-byte message:
sign 16 µs, verify 40 µs, SHA-256 0.4 µs. Signed per event, the executor's 36k
events/s would drop to ~23k/s and a reader could not verify more than ~25k/s; per
batch, a busy run signs once per round trip of up to 1,000 events and an idle one
once per event (which is then cheap). A batch is written atomically and contiguously,
so a reader sees all of it in the same read (it completes one cut by its read count,
or a resume from the middle, by reading the entries just before it).

A reader (:class:`EventVerifier`) believes an executor event only when its batch
verifies with a trusted executor key, and binds each attempt to the key of its first
verified batch (the one with its ``accepted``): a result or progress of that attempt
signed by any other key is not believed. ``cancel_requested`` must carry a trusted
orchestrator's signature over the events key and its data. ``submitted`` is passed
through as before. Anything else is reported as
:class:`contracts.events.Unverified` -- shown, never acted on.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from contracts import DecodeError, Event, Result, Unverified, decode_event
from deploystream.errors import KeyMaterialError
from deploystream.keys import Signer, Trust, signed_bytes
from deploystream.redis_clock import redis_time
from deploystream.retry import redis_call

EVENTS_DOMAIN = b"deploystream/events/1\n"
DEAD_DOMAIN = b"deploystream/dead-letter/1\n"
PRESENCE_DOMAIN = b"deploystream/presence/1\n"

# Event entries: the last entry of a batch carries these.
SIG = b"sig"
KID = b"kid"
COUNT = b"n"
# Dead letters carry the executor's proof under names of their own: ``sig``/``kid``
# of the copied job entry are the orchestrator's.
DEAD_SIG = b"dead_sig"
DEAD_KID = b"dead_kid"
# Presence hashes.
PRESENCE_SIG = "sig"
PRESENCE_KID = "kid"

Entry = tuple[str, dict[bytes, bytes]]
# Reads up to n entries just before an entry id, oldest first.
FetchBefore = Callable[[str, int], Awaitable[list[Entry]]]


async def entries_before(redis: Redis, key: str, entry_id: str, count: int) -> list[Entry]:
    """Up to ``count`` entries of ``key`` just before ``entry_id``, oldest first (an
    :class:`EventVerifier`'s ``fetch_before``, with ``functools.partial``)."""
    found = await redis_call(lambda: redis.xrevrange(key, max=f"({entry_id}", min="-", count=count))
    return [(eid.decode(), dict(fields)) for eid, fields in reversed(found)]


def cancel_place(stream: str, entry_id: str) -> str:
    """Where a cancel is signed for: its stream *and* the entry id it is written under.

    The orchestrator picks the id (:func:`next_entry_id`) and writes the cancel with
    ``XADD`` at exactly that id; stream ids only grow, so a copy of a genuine cancel
    re-added later (to the control stream, or to a request's stream after a ``dlq
    replay`` started a new generation) stands at another id and does not verify."""
    return f"{stream}#{entry_id}"


async def next_entry_id(redis: Redis, key: str) -> str:
    """An id an ``XADD`` to ``key`` can take now: past its last entry and not before
    Redis's clock (an ``XADD`` still refused -- a race, or a deleted top entry -- is
    retried by the caller with a new one)."""
    top = await redis_call(lambda: redis.xrevrange(key, count=1))
    now_ms = int(await redis_time(redis) * 1000)
    if top:
        ms, seq = (int(x) for x in top[0][0].decode().split("-", 1))
        if ms >= now_ms:
            return f"{ms}-{seq + 1}"
    return f"{now_ms}-0"


def _digest(items: Iterable[bytes]) -> bytes:
    h = hashlib.sha256()
    for item in items:
        h.update(len(item).to_bytes(8, "big"))
        h.update(item)
    return h.digest()


def batch_message(key: str, datas: Sequence[bytes]) -> bytes:
    """What an executor signs for one published batch of ``key``'s events."""
    return EVENTS_DOMAIN + key.encode() + b"\n" + str(len(datas)).encode() + b"\n" + _digest(datas)


def sign_batch(signer: Signer, key: str, datas: Sequence[bytes]) -> tuple[str, str]:
    """(signature, key id) of a batch, for its last entry's ``sig`` and ``kid``."""
    return signer.sign(batch_message(key, datas)), signer.kid


def genuine_result(trust: Trust, key: str, entry: Sequence[bytes]) -> Result | None:
    """The result in ``entry`` (``[data, sig, kid, n]``, as the scripts return a
    result entry) if an executor signed it as a batch of one, else None."""
    if len(entry) < 4 or entry[3] != b"1":
        return None
    data, sig, kid = entry[0], entry[1], entry[2]
    try:
        trust.executor_signed(batch_message(key, [data]), sig, kid)
        event = decode_event(data)
    except (KeyMaterialError, DecodeError):
        return None
    return event if isinstance(event, Result) else None


# The most forged results one call passes over (the scripts read back 64 entries).
_FORGED_MAX = 64

ResultCheckedCall = Callable[[str, str], Awaitable[Any]]


async def past_forged_results(
    trust: Trust, key: str, call: ResultCheckedCall, on_forged: Callable[[str], None]
) -> Any:
    """Run a script that believes only a verified result (see
    deploystream.generations.RESULT_CHECK_FN): ``call(forged, believed)`` runs it; when
    it stops at a result (``[b"result", data, sig, kid, n, entry id]``) the result is
    verified here with :func:`genuine_result` and the script called again, passing it
    over (``on_forged(entry id)`` is called) or believing it. Returns the script's
    other reply."""
    forged: list[str] = []
    believed = ""
    while True:
        reply = await call(" ".join(forged), believed)
        if not (isinstance(reply, list) and reply and reply[0] == b"result"):
            return reply
        entry_id = reply[5].decode()
        if len(forged) < _FORGED_MAX and genuine_result(trust, key, reply[1:5]) is None:
            on_forged(entry_id)
            forged.append(entry_id)
        else:  # genuine (or too many planted to pass over: take it as a result)
            believed = entry_id


def dead_letter_message(stream: str, fields: Sequence[bytes]) -> bytes:
    """What an executor signs for a dead letter: its stream and its fields, in order."""
    return DEAD_DOMAIN + stream.encode() + b"\n" + _digest(fields)


def sign_dead_letter(signer: Signer, stream: str, fields: Sequence[bytes]) -> list[bytes]:
    """The proof fields to append to a dead letter whose flattened fields are ``fields``."""
    sig = signer.sign(dead_letter_message(stream, fields))
    return [DEAD_SIG, sig.encode(), DEAD_KID, signer.kid.encode()]


def verify_dead_letter(trust: Trust, stream: str, fields: Mapping[bytes, bytes]) -> str:
    """The key id that wrote this dead letter; raise :class:`KeyMaterialError`."""
    flat: list[bytes] = []
    for k, v in fields.items():
        if k not in (DEAD_SIG, DEAD_KID):
            flat += [k, v]
    return trust.executor_signed(
        dead_letter_message(stream, flat), fields.get(DEAD_SIG, b""), fields.get(DEAD_KID, b"")
    )


def presence_message(key: str, fields: Mapping[str, str]) -> bytes:
    items: list[bytes] = []
    for k in sorted(fields):
        if k not in (PRESENCE_SIG, PRESENCE_KID):
            items += [k.encode(), fields[k].encode()]
    return PRESENCE_DOMAIN + key.encode() + b"\n" + _digest(items)


def sign_presence(signer: Signer, key: str, fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` with the executor's proof added (the hash's ``sig`` and ``kid``)."""
    return {
        **fields,
        PRESENCE_SIG: signer.sign(presence_message(key, fields)),
        PRESENCE_KID: signer.kid,
    }


def verify_presence(trust: Trust, key: str, fields: Mapping[bytes, bytes]) -> str:
    """The key id that wrote this presence hash; raise :class:`KeyMaterialError`."""
    text = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()}
    return trust.executor_signed(
        presence_message(key, text),
        text.get(PRESENCE_SIG, ""),
        text.get(PRESENCE_KID, ""),
    )


class EventVerifier:
    """Feed a request's event entries in stream order; get back what to believe.

    :meth:`add` returns ``(entry_id, event)`` pairs, each a verified event or an
    :class:`~contracts.events.Unverified` note in its place. Entries of a batch are
    held until its signed last entry arrives; :meth:`settle` (called when a read
    returned everything there was) reports entries no signature came for.
    """

    def __init__(self, trust: Trust, request_id: str, key: str, fetch_before: FetchBefore) -> None:
        self._trust = trust
        self._request_id = request_id
        self._key = key
        self._fetch_before = fetch_before
        self._pending: list[Entry] = []
        self._signer_of: dict[int, str] = {}  # attempt -> executor key id

    def _note(self, entry: Entry, reason: str) -> tuple[str, Event]:
        entry_id, fields = entry
        claimed = fields.get(b"type", b"").decode("utf-8", "replace")[:64]
        attempt = 0
        with contextlib.suppress(DecodeError):
            attempt = decode_event(fields.get(b"data", b"")).attempt
        return entry_id, Unverified(
            request_id=self._request_id,
            seq=0,
            ts=time.time(),
            attempt=attempt,
            entry_id=entry_id,
            claimed=claimed,
            reason=reason,
        )

    def settle(self) -> list[tuple[str, Event]]:
        """Entries still waiting for a signature when no more can be in flight."""
        out = [self._note(e, "unsigned (no executor signature)") for e in self._pending]
        self._pending = []
        return out

    async def add(self, entry_id: str, fields: dict[bytes, bytes]) -> list[tuple[str, Event]]:
        entry = (entry_id, fields)
        if fields.get(b"seq", b"0") in (b"0", b""):
            return [*self.settle(), self._orchestrator_entry(entry)]
        self._pending.append(entry)
        if SIG not in fields:
            return []
        return await self._close_batch(entry)

    def _orchestrator_entry(self, entry: Entry) -> tuple[str, Event]:
        entry_id, fields = entry
        etype = fields.get(b"type", b"")
        data = fields.get(b"data", b"")
        if etype == b"cancel_requested":
            try:
                self._trust.orchestrator_signed(
                    signed_bytes(cancel_place(self._key, entry_id), data),
                    fields.get(SIG, b""),
                    fields.get(KID, b""),
                )
            except KeyMaterialError as exc:
                return self._note(entry, f"cancel not signed by a trusted orchestrator: {exc}")
        elif etype != b"submitted":
            return self._note(entry, "not an executor event (seq 0)")
        try:
            return entry_id, decode_event(data)
        except DecodeError:
            return self._note(entry, "undecodable")

    async def _close_batch(self, last: Entry) -> list[tuple[str, Event]]:
        fields = last[1]
        try:
            n = int(fields.get(COUNT, b"0"))
        except ValueError:
            n = 0
        out: list[tuple[str, Event]] = []
        if n < 1 or n > 1000 + 2:
            batch, self._pending = self._pending, []
            return out + [self._note(e, "malformed batch signature") for e in batch]
        if len(self._pending) > n:  # earlier entries no signature covers
            stray, self._pending = self._pending[:-n], self._pending[-n:]
            out += [self._note(e, "unsigned (no executor signature)") for e in stray]
        batch, self._pending = self._pending, []
        prefix: list[Entry] = []
        if len(batch) < n:  # cut by a read's count, or a resume from the batch's middle
            prefix = await self._fetch_before(batch[0][0], n - len(batch))
            if len(prefix) != n - len(batch):
                return out + [self._note(e, "incomplete signed batch") for e in batch]
        datas = [f.get(b"data", b"") for _, f in prefix + batch]
        try:
            kid = self._trust.executor_signed(
                batch_message(self._key, datas), fields.get(SIG, b""), fields.get(KID, b"")
            )
        except KeyMaterialError as exc:
            return out + [self._note(e, f"not signed by a trusted executor: {exc}") for e in batch]
        for entry in batch:
            try:
                event = decode_event(entry[1].get(b"data", b""))
            except DecodeError:
                out.append(self._note(entry, "undecodable"))
                continue
            if event.request_id != self._request_id:
                out.append(self._note(entry, "signed for another request"))
                continue
            bound = self._signer_of.setdefault(event.attempt, kid)
            if bound != kid:
                out.append(
                    self._note(
                        entry,
                        f"signed by another executor key than attempt {event.attempt}'s accepted",
                    )
                )
                continue
            out.append((entry[0], event))
        return out
