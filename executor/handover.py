"""Handing a job to an executor that has its playbook.

The consumer group delivers an entry to whichever executor reads it; it knows nothing
of playbooks, and executors may have different project dirs. An executor that lacks
a job's playbook (``intake.NotOffered``) neither runs it nor refuses it: it hands the
entry to a live executor that advertises the playbook, and dead-letters it (reason
named) only when no such executor is alive.

**Giving** (:data:`HANDOVER`, one fenced step): if the giver still holds the entry at
the delivery count it read, ``XCLAIM <target> … JUSTID`` moves it to the target's
pending list -- ``JUSTID`` keeps the delivery count, so a hand-over never counts
toward ``max-deliveries`` (only a holder that dies does), and the claim resets the
idle time, so nobody adopts it for a lease -- and a note ``<delivery> <entry id>`` is
pushed to the target's inbox, ``<job stream>.handover:<target>`` (a list), in the
same step (with the previous owner's name when the giver had adopted the entry from
a dead executor, so the target's run is announced by ``reclaimed`` as an adopter's
is). The target is a running executor whose presence hash was refreshed recently and
offers the playbook, the one with the most free slots first.

**Taking**: each executor blocks on its inboxes (``BLPOP``, no polling). For a note
it checks that the entry is in its own pending list at that delivery count and not
already running, reads it, and handles it as one it read itself (its lease loop
renews it from then on). A note is only a wake-up: ownership is what the pending
list says, and every later step is fenced as usual.

**When it goes wrong**: a target that dies before or after popping the note holds
an entry nobody renews; it goes idle past the lease and is adopted as usual (that
delivery counts: its holder died), and an adopter that lacks the playbook hands it
on again. A stopping target gives a handed entry straight back (idle, for the next
adopter). Past ``max-deliveries`` the entry is dead-lettered wherever it is, so no
chain of hand-overs (to a target that keeps dying, or a forged presence) goes on
forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis

from contracts import StreamsConfig
from deploystream.keys import Trust
from deploystream.leases import FENCE_FN
from deploystream.presence import LiveOffers, presence_period_s, presence_ttl_s
from deploystream.retry import redis_call
from executor.ownership import Owned

log = structlog.get_logger(__name__)

# KEYS[1] job stream, KEYS[2] the target's inbox.
# ARGV group, entry id, consumer, delivery, target, inbox ttl, note.
# Returns 1 handed over, 0 not the owner (nothing done).
HANDOVER = (
    FENCE_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, ARGV[2], 'JUSTID')
redis.call('RPUSH', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""
)


@dataclass(frozen=True)
class Note:
    """An entry handed to this executor."""

    stream: str
    entry_id: str
    delivery: int
    # The executor that died holding it, when the giver had adopted it: the target's
    # run then starts with ``reclaimed`` naming it, as an adopter's would.
    reclaimed_from: str | None = None

    def encode(self) -> str:
        return " ".join([str(self.delivery), self.entry_id, *filter(None, [self.reclaimed_from])])

    @classmethod
    def decode(cls, stream: str, text: str) -> Note:
        delivery, entry_id, *rest = text.split(" ", 2)
        return cls(stream, entry_id, int(delivery), rest[0] if rest else None)


class Handover:
    """Give entries to executors that have their playbook; receive those given to us."""

    def __init__(self, redis: Redis, config: StreamsConfig, name: str, peers: Trust) -> None:
        self.redis = redis
        self.config = config
        self.name = name
        self.peers = peers  # whose presence counts: a made-up one takes no hand-over
        self.group = config.groups.executors
        self._script = redis.register_script(HANDOVER)
        self._inboxes = {config.handover_key(s, name): s for s in config.job_streams}

    async def give(
        self, owned: Owned, playbook: str, reclaimed_from: str | None = None
    ) -> str | None:
        """Hand ``owned`` to a live executor offering ``playbook``: its name, or None
        when there is none (or we no longer own the entry: then ``owned.lost``)."""
        offers = await redis_call(lambda: LiveOffers.read(self.redis, self.config, self.peers))
        fresh_s = 2 * presence_period_s(self.config) + 1
        # The inbox outlives a target that dies with notes in it only briefly.
        ttl = presence_ttl_s(self.config) + self.config.executor.lease_ms // 1000
        targets = offers.targets(playbook, exclude=self.name, fresh_s=fresh_s)
        if not targets:
            return None
        target = targets[0].name
        inbox = self.config.handover_key(owned.stream, target)
        note = Note(owned.stream, owned.entry_id, owned.delivery, reclaimed_from).encode()
        args: list[Any] = [self.group, owned.entry_id, self.name, owned.delivery, target, ttl, note]
        done = await redis_call(lambda: self._script(keys=[owned.stream, inbox], args=args))
        if int(done) == 0:
            owned.lost = True
            return None
        return target

    async def receive(self, timeout_s: float) -> list[Note]:
        """Notes of entries handed to us (blocks up to ``timeout_s``)."""
        reply = await self.redis.blpop(list(self._inboxes), timeout=timeout_s)  # type: ignore[misc]
        if not reply:
            return []
        key_b, value_b = reply
        key = key_b.decode() if isinstance(key_b, bytes) else str(key_b)
        try:
            note = Note.decode(self._inboxes[key], value_b.decode())
        except (KeyError, ValueError, UnicodeDecodeError):
            log.warning("handover.bad_note", inbox=key)
            return []
        return [note]

    async def still_ours(self, note: Note) -> dict[bytes, bytes] | None:
        """The entry's fields if it is in our pending list at the note's delivery count
        (None: not ours, or trimmed away -- then it is acked)."""
        rows = await self.redis.xpending_range(
            note.stream, self.group, min=note.entry_id, max=note.entry_id, count=1
        )
        if not rows:
            return None
        row = rows[0]
        consumer = row["consumer"]
        consumer = consumer.decode() if isinstance(consumer, bytes) else str(consumer)
        if consumer != self.name or int(row["times_delivered"]) != note.delivery:
            return None
        found = await self.redis.xrange(note.stream, min=note.entry_id, max=note.entry_id, count=1)
        if not found or not found[0][1]:
            await self.redis.xack(note.stream, self.group, note.entry_id)
            return None
        return dict(found[0][1])
