"""The stream client: submit jobs, tail a request's events live, cancel, retry,
and the operator's dead-letter view.

This is the only place the orchestrator side touches the job and event streams;
the graph reaches it through :class:`orchestrator.gateway.JobGateway`.

Generations: a request's event stream starts with ``submitted`` and ends with one
terminal ``result``. ``dlq replay`` re-enqueues a dead-lettered job *as the same
request*: it appends a new ``submitted`` event (a new generation) and the job entry
(with ``attempt_base``, so the new attempts are numbered after the old ones). A
``result`` followed by a later ``submitted`` is therefore not the last word;
:meth:`StreamClient.events` reads on to the result of the latest generation, and
:meth:`StreamClient.last_result` answers for the latest generation only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from contracts import (
    Cancel,
    CancelRequested,
    DecodeError,
    Event,
    Job,
    Result,
    StreamsConfig,
    Submitted,
    Unverified,
    decode_event,
    decode_job,
    encode,
    job_kind,
)
from contracts.entries import (
    ATTEMPT_BASE,
    DEAD_LETTER_FIELDS,
    REPLAY_FIELDS,
    REPLAY_OF,
    job_digest,
)
from contracts.requests import DeployRequest
from deploystream.errors import (
    BadInputError,
    InfrastructureError,
    KeyMaterialError,
    StreamGapError,
    StreamVanishedError,
)
from deploystream.generations import RESULT_CHECK_FN, STATE_FN
from deploystream.keys import OrchestratorKeys, Trust
from deploystream.presence import LiveOffers
from deploystream.proofs import (
    COUNT,
    KID,
    SIG,
    EventVerifier,
    cancel_place,
    entries_before,
    genuine_result,
    next_entry_id,
    past_forged_results,
    verify_dead_letter,
)
from deploystream.redis_clock import redis_time
from deploystream.retry import redis_call

log = structlog.get_logger(__name__)

# Entries per XREAD of a request's stream.
_READ_COUNT = 1000
# Tries to write a cancel at an id signed for it (another writer may take the id).
_PLACE_TRIES = 5

# How long what live executors offer is trusted before it is read again.
_OFFERS_MAX_AGE_S = 1.0

# KEYS: [idempotency key,] events key, job stream.
# ARGV: request id, idempotency ttl, submitted event, job payload, sig, kid, jobs maxlen,
#       events ttl, has-idempotency-key flag, digest of the job's parameters.
# The key holds "<request id> <digest>". Returns {request id that owns the key, 1}, or
# {that request id, 0} when the key was used with other parameters (nothing written).
# A key stored without a digest (before digests existed) matches any parameters.
_SUBMIT = """
local i = 0
if ARGV[9] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then
    local space = string.find(existing, ' ', 1, true)
    if not space then return {existing, 1} end
    local owner = string.sub(existing, 1, space - 1)
    if string.sub(existing, space + 1) ~= ARGV[10] then return {owner, 0} end
    return {owner, 1}
  end
  -- SETEX: the orchestrator's ACL allows no SET here, so no key without a TTL
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1] .. ' ' .. ARGV[10])
  i = 1
end
redis.call('XADD', KEYS[i + 1], '*', 'type', 'submitted', 'seq', 0, 'data', ARGV[3])
redis.call('EXPIRE', KEYS[i + 1], ARGV[8])
redis.call('XADD', KEYS[i + 2], 'MAXLEN', '~', ARGV[7], '*',
           'job', ARGV[4], 'sig', ARGV[5], 'kid', ARGV[6])
return {ARGV[1], 1}
"""

# A request id given by a prefix needs at least this many characters (what the CLI prints).
MIN_PREFIX = 8
_CANDIDATES_SHOWN = 10


class IdempotencyConflictError(BadInputError):
    """An idempotency key already names a request with other parameters."""


def parameters_digest(job: Job) -> str:
    """What makes two submissions "the same request": every job field except its
    identity and times (request id, submitted_at, expires_at) and the sealed values,
    which differ on every sealing (secrets count by name, the GitHub token by presence)."""
    fields = msgspec.structs.asdict(job)
    for name in ("request_id", "submitted_at", "expires_at"):
        fields.pop(name, None)
    fields["secrets"] = sorted(job.secrets)
    if "github_token" in fields:
        fields["github_token"] = fields["github_token"] is not None
    fields["kind"] = job_kind(job)
    return hashlib.sha256(_canonical.encode(fields)).hexdigest()


_canonical = msgspec.json.Encoder(order="sorted")


# KEYS[1] events key. ARGV[1] the cancel_requested entry's data, ARGV[2] its
# signature, ARGV[3] the key id (executors believe only a signed cancel), ARGV[4]
# forged, ARGV[5] believed (see deploystream.generations.RESULT_CHECK_FN: only a
# verified result makes the request finished), ARGV[6] the entry id the cancel is
# signed for (deploystream.proofs.cancel_place).
# Returns 1 written, 0 the request already has a result, -1 no such request,
# {'result', ...} (nothing written) for the caller to verify, or {'taken'} when the
# id can no longer be written (the caller signs for a new one).
_CANCEL = (
    STATE_FN
    + RESULT_CHECK_FN
    + """
local state, _, last = generation(KEYS[1], id_set(ARGV[4]))
if state == 'result' then
  if last[5] ~= ARGV[5] then return result_check(last) end
  return 0
end
if state == 'empty' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local added = redis.pcall('XADD', KEYS[1], ARGV[6], 'type', 'cancel_requested', 'seq', 0,
                          'data', ARGV[1], 'sig', ARGV[2], 'kid', ARGV[3])
if type(added) == 'table' and added.err then return {'taken'} end
return 1
"""
)

# KEYS[1] dead-letter stream, KEYS[2] job stream, KEYS[3] events key and KEYS[4] the
# job's consumed-job record (both KEYS[1] when the request id is unknown). ARGV dead
# entry id, submitted event ('' = none), events ttl, jobs maxlen, then the new entry's
# fields. Returns the new entry id, or nil when the dead letter is gone (already
# replayed). An executor runs a consumed job only from the entry its record names:
# the record moves to the new entry (the old one can never run again).
_REPLAY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'type', 'submitted', 'seq', 0, 'data', ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
if KEYS[4] ~= KEYS[1] and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('SET', KEYS[4], KEYS[2] .. ' ' .. id, 'KEEPTTL')
end
return id
"""

# Dropped from a dead letter's fields when it is replayed (then set anew).
_DEAD_META = DEAD_LETTER_FIELDS | REPLAY_FIELDS


def event_type(event: Event) -> str:
    tag: str = event.__struct_config__.tag  # type: ignore[assignment]
    return tag


def _int(raw: bytes | None, default: int = 0) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _submitted(job: Job, stream: str, sig: str, kid: str) -> Submitted:
    """A generation's opening event: the job as signed, with its entry's signature."""
    return Submitted(
        request_id=job.request_id,
        seq=0,
        ts=time.time(),
        attempt=0,
        job=job,
        stream=stream,
        job_sig=sig,
        job_kid=kid,
    )


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter stream: the original fields plus why it died."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]

    def _text(self, name: bytes) -> str | None:
        raw = self.fields.get(name)
        return raw.decode("utf-8", "replace") if raw is not None else None

    @property
    def reason(self) -> str:
        return self._text(b"reason") or ""

    @property
    def delivery_count(self) -> int:
        return _int(self.fields.get(b"delivery_count"))

    @property
    def attempt(self) -> int:
        """The attempt its dead letter ended (older entries: base + deliveries)."""
        if b"attempt" in self.fields:
            return _int(self.fields[b"attempt"])
        return _int(self.fields.get(ATTEMPT_BASE)) + self.delivery_count

    @property
    def source_stream(self) -> str:
        return self._text(b"source_stream") or ""

    def job(self) -> Job | None:
        try:
            return decode_job(self.fields.get(b"job", b""))
        except (DecodeError, ValueError):
            return None

    def proof(self, trust: Trust) -> str | None:
        """Why this dead letter cannot be shown to come from an executor (None: it can)."""
        try:
            verify_dead_letter(trust, self.stream, self.fields)
        except KeyMaterialError as exc:
            return str(exc)
        return None

    def as_dict(self) -> dict[str, object]:
        job = self.job()
        return {
            "entry_id": self.entry_id,
            "stream": self.stream,
            "source_stream": self.source_stream,
            "source_id": self._text(b"source_id"),
            "request_id": job.request_id if job else None,
            "kind": job_kind(job) if job else None,
            "playbook": job.playbook if job else None,
            "reason": self.reason,
            "delivery_count": self.delivery_count,
            "attempt": self.attempt,
            "executor": self._text(b"executor"),
            "dead_at": float(self._text(b"dead_at") or 0) or None,
            "replay_of": self._text(REPLAY_OF),
        }


class StreamClient:
    """Implements :class:`orchestrator.gateway.JobGateway` over Redis Streams."""

    def __init__(
        self,
        redis: Redis,
        config: StreamsConfig,
        keys: OrchestratorKeys | None = None,
        *,
        name: str = "deployctl",
        wait_on_oom: bool = True,
        trust: Trust | None = None,
    ) -> None:
        self.redis = redis
        self.config = config
        self.keys = keys
        self.name = name
        # A service waits out a full Redis; a one-shot command says so and exits 3.
        self.wait_on_oom = wait_on_oom
        # Whose signatures a read believes; with neither keys nor trust, nobody's:
        # every executor event then reads as unverified.
        if trust is None:
            trust = keys.trust if keys is not None else Trust.empty()
        self.trust = trust
        self._submit_script = redis.register_script(_SUBMIT)
        self._cancel_script = redis.register_script(_CANCEL)
        self._offers: tuple[float, LiveOffers] | None = None

    async def offers(self) -> LiveOffers:
        """What live executors offer (their playbooks and declared vars), read at most
        once a second."""
        now = time.monotonic()
        if self._offers is None or now - self._offers[0] > _OFFERS_MAX_AGE_S:
            self._offers = (
                now,
                await redis_call(lambda: LiveOffers.read(self.redis, self.config, self.trust)),
            )
        return self._offers[1]

    async def submit(self, job: Job) -> str:
        """Sign and enqueue ``job`` (its ``submitted`` event first); returns the request
        id that owns it (another one's when the idempotency key was taken).

        Refused (BadInputError, nothing written) when no live executor offers its
        playbook, or one that does would refuse its extra vars (``deploystream.presence``).

        The job's ``expires_at`` is stamped here, inside the signature: Redis's clock
        now plus ``job-validity-s``. Executors compare it with the same clock (TIME in
        their START script), so no two machines' wall clocks are ever compared.
        """
        if self.keys is None:
            raise BadInputError("submitting needs the orchestrator signing key")
        (await self.offers()).check(job)
        cfg = self.config
        stream = cfg.stream_for_kind(job_kind(job))
        now = await self.redis_time()
        job = msgspec.structs.replace(job, expires_at=now + cfg.retention.job_validity_s)
        payload = encode(job)
        sig = self.keys.sign(stream, payload)
        submitted = _submitted(job, stream, sig, self.keys.kid)
        # Always keyed: with no idempotency key of its own, the request id is the key, so
        # a submit retried across a dropped connection can never enqueue the job twice.
        idem = cfg.idempotency_key(job.idempotency_key or f"request:{job.request_id}")
        keys = [idem, cfg.events_key(job.request_id), stream]
        # The submitted event lives at least as long as a job may wait, then expires.
        ttl = max(cfg.retention.idempotency_ttl_s, cfg.retention.events_ttl_s + job.timeout_s)
        args: list[str | int | bytes] = [
            job.request_id,
            cfg.retention.idempotency_ttl_s,
            encode(submitted),
            payload,
            sig,
            self.keys.kid,
            cfg.retention.jobs_maxlen,
            ttl,
            "1",
            parameters_digest(job),
        ]
        # EVALSHA after the first call (redis-py's Script falls back on NOSCRIPT).
        owner, same = await redis_call(
            lambda: self._submit_script(keys=keys, args=args), wait_on_oom=self.wait_on_oom
        )
        request_id = owner.decode() if isinstance(owner, bytes) else str(owner)
        if not int(same):
            raise IdempotencyConflictError(
                f"idempotency key {job.idempotency_key!r} already names request "
                f"{request_id}, which has other parameters: refused (use a new key for "
                "new parameters)"
            )
        log.info(
            "job.submitted",
            request_id=request_id,
            stream=stream,
            duplicate=request_id != job.request_id,
        )
        return request_id

    async def redis_time(self) -> float:
        """The Redis server's clock (TIME), the one clock both sides of a job read (and
        the deploy graph's wait deadline is kept on)."""
        return await redis_call(partial(redis_time, self.redis))

    async def exists(self, request_id: str) -> bool:
        return bool(await self.redis.exists(self.config.events_key(request_id)))

    async def resolve(self, given: str) -> str:
        """The request id ``given`` names: itself, or the one request it is a prefix of
        (at least :data:`MIN_PREFIX` characters). BadInputError when none or several."""
        if await self.exists(given):
            return given
        if len(given) < MIN_PREFIX:
            raise BadInputError(
                f"no request {given} (unknown or expired; a prefix needs at least "
                f"{MIN_PREFIX} characters)"
            )
        pattern = self.config.events_key(given + "*")
        head, _, tail = pattern.partition(given + "*")
        found: list[str] = []
        async for key in self.redis.scan_iter(match=pattern, count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            found.append(name[len(head) : len(name) - len(tail)])
        if not found:
            raise BadInputError(f"no request {given} (unknown or expired)")
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:_CANDIDATES_SHOWN])
            extra = len(found) - _CANDIDATES_SHOWN
            more = f" and {extra} more" if extra > 0 else ""
            raise BadInputError(f"{given} is the start of {len(found)} requests: {shown}{more}")
        return found[0]

    async def events(self, request_id: str, after: str = "0") -> AsyncIterator[tuple[str, Event]]:
        """Replay from ``after`` then follow live until the terminal result.

        Blocks on XREAD (no polling). After a dropped connection or a Redis restart
        it resumes from the last id it yielded, so nothing is missed or repeated.
        ``seq`` is checked per attempt; a repeated event (a publish retried across
        a reconnect) is skipped, a hole raises :class:`StreamGapError`. Read from the
        start, the stream must open with ``submitted`` and hold as many events of
        the final attempt as its result's ``event_count`` says (StreamGapError
        otherwise). A stream that disappears while followed (TTL, eviction) raises
        :class:`StreamVanishedError` within one blocking read (5 s) instead of
        waiting forever: XREAD on a missing key blocks until its timeout every time.

        Only signed events are believed (:class:`deploystream.proofs.EventVerifier`):
        one that does not verify is yielded as an :class:`~contracts.Unverified`
        note in its place, counts for nothing, and never ends the tail.
        """
        key = self.config.events_key(request_id)
        last = after
        seen: dict[int, int] = {}
        strict = after in ("0", "0-0")
        opened = not strict
        verifier = EventVerifier(
            self.trust, request_id, key, partial(entries_before, self.redis, key)
        )
        while True:
            reply = await redis_call(
                partial(self.redis.xread, {key: last}, block=5000, count=_READ_COUNT)
            )
            if not reply and not await redis_call(partial(self.redis.exists, key)):
                raise StreamVanishedError(
                    f"the event stream of request {request_id} is gone (it expired, or "
                    "Redis evicted it) before its result"
                )
            for _, entries in reply or []:
                checked: list[tuple[str, Event]] = []
                for entry_id_b, fields in entries:
                    last = entry_id_b.decode()
                    checked += await verifier.add(last, fields)
                if len(entries) < _READ_COUNT:  # everything there was: no batch is cut
                    checked += verifier.settle()
                for n, (entry_id, event) in enumerate(checked, 1):
                    if isinstance(event, Unverified):
                        log.warning(
                            "event.unverified",
                            request_id=request_id,
                            entry=entry_id,
                            claimed=event.claimed,
                            reason=event.reason,
                        )
                        yield entry_id, event
                        continue
                    if not opened:
                        # (A forged entry's ``rejected`` result may stand alone.)
                        if not isinstance(event, (Submitted, Result)):
                            raise StreamGapError(
                                f"request {request_id}: its stream does not start with "
                                f"'submitted' (it starts at a {event_type(event)!r} event): "
                                "its beginning was trimmed or lost"
                            )
                        opened = True
                    if event.seq > 0:
                        prev = seen.get(event.attempt)
                        if prev is not None and event.seq <= prev:
                            continue  # duplicate of an event already yielded
                        expected = (prev or 0) + 1
                        if event.seq != expected and (strict or prev is not None):
                            raise StreamGapError(
                                f"request {request_id} attempt {event.attempt}: expected seq "
                                f"{expected}, got {event.seq}"
                            )
                        seen[event.attempt] = event.seq
                    if (
                        strict
                        and isinstance(event, Result)
                        and event.seq > 0
                        and event.event_count != seen.get(event.attempt)
                    ):
                        raise StreamGapError(
                            f"request {request_id} attempt {event.attempt}: its result counts "
                            f"{event.event_count} events, {seen.get(event.attempt, 0)} are there"
                        )
                    yield entry_id, event
                    if isinstance(event, Result):
                        # The last word unless a later ``submitted`` (a replay) follows.
                        # A reply shorter than a full read held everything there was:
                        # nothing follows the result, so no second look is needed.
                        if n == len(checked) and len(entries) < _READ_COUNT:
                            return
                        if not await self._superseded(key, entry_id):
                            return

    async def _superseded(self, key: str, result_id: str) -> bool:
        """A ``submitted`` after this result: the request was replayed (new generation)."""
        later = await redis_call(
            lambda: self.redis.xrange(key, min=f"({result_id}", max="+", count=64)
        )
        return any(fields.get(b"type") == b"submitted" for _, fields in later)

    async def first_event(self, request_id: str) -> Submitted | None:
        entries = await self.redis.xrange(self.config.events_key(request_id), count=1)
        if not entries:
            return None
        try:
            event = decode_event(entries[0][1].get(b"data", b""))
        except DecodeError:
            return None
        return event if isinstance(event, Submitted) else None

    async def last_result(self, request_id: str) -> Result | None:
        """The terminal result of the request's latest generation, if it has one.

        Only a result an executor signed counts (a result is a signed batch of one);
        entries that do not verify are passed over.
        """
        key = self.config.events_key(request_id)
        entries = await self.redis.xrevrange(key, count=64)
        for _, fields in entries:
            etype = fields.get(b"type")
            if etype == b"cancel_requested":
                continue
            if etype != b"result":
                return None
            result = genuine_result(
                self.trust,
                key,
                [fields.get(name, b"") for name in (b"data", SIG, KID, COUNT)],
            )
            if result is not None:
                return result
            # not an executor's (planted with a Redis credential): pass over it
        return None

    async def cancel(self, request_id: str, reason: str = "") -> bool:
        """Ask for a cancel. False when the request has already finished.

        The ``cancel_requested`` event goes on the request's stream atomically with
        the check that it has no result yet (an executor that has not started the
        job sees it there and never starts it); then a broadcast on the control
        stream reaches the executor running it. Raises BadInputError for an unknown
        (or expired) request.
        """
        if self.keys is None:
            raise BadInputError("cancelling needs the orchestrator signing key")
        keys = self.keys
        cfg = self.config
        now = time.time()
        key = cfg.events_key(request_id)
        note = encode(
            CancelRequested(
                request_id=request_id, seq=0, ts=now, attempt=0, by=self.name, reason=reason
            )
        )

        def planted(entry_id: str) -> None:
            log.warning("result.unverified", key=key, entry=entry_id, at="cancel")

        for _ in range(_PLACE_TRIES):
            place = await next_entry_id(self.redis, key)
            sig = keys.sign(cancel_place(key, place), note)

            async def step(forged: str, believed: str) -> Any:
                args: list[bytes | str] = [note, sig, keys.kid, forged, believed, place]  # noqa: B023
                return await redis_call(
                    lambda: self._cancel_script(keys=[key], args=args),
                    wait_on_oom=self.wait_on_oom,
                )

            written = await past_forged_results(self.trust, key, step, planted)
            if written != [b"taken"]:
                break
        else:
            raise InfrastructureError(f"could not place a cancel on {key}")
        if int(written) < 0:
            raise BadInputError(f"no request {request_id} (unknown, or its events expired)")
        if int(written) == 0:
            return False
        command = encode(Cancel(request_id=request_id, by=self.name, ts=now, reason=reason))
        control = cfg.streams.control
        for _ in range(_PLACE_TRIES):
            place = await next_entry_id(self.redis, control)
            fields: dict[FieldT, EncodableT] = {
                "data": command,
                "sig": keys.sign(cancel_place(control, place), command),
                "kid": keys.kid,
            }
            try:
                await redis_call(
                    lambda: self.redis.xadd(
                        control,
                        fields,  # noqa: B023
                        id=place,  # noqa: B023
                        maxlen=cfg.retention.control_maxlen,
                        approximate=True,
                    ),
                    wait_on_oom=self.wait_on_oom,
                )
                break
            except ResponseError as exc:
                if "equal or smaller" not in str(exc):
                    raise
        else:
            raise InfrastructureError(f"could not place a cancel on {control}")
        log.info("job.cancel_requested", request_id=request_id)
        return True

    # ------------------------------------------------------------------ dead letters
    async def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        """Entries of every dead-letter stream, oldest first within each stream."""
        out: list[DeadLetter] = []
        for stream in self.config.job_streams:
            dead = self.config.dead_key(stream)
            for entry_id, fields in await self.redis.xrange(dead, count=count):
                out.append(DeadLetter(dead, entry_id.decode(), dict(fields)))
        return out

    async def dead_letter(self, entry_id: str) -> DeadLetter | None:
        for stream in self.config.job_streams:
            dead = self.config.dead_key(stream)
            found = await self.redis.xrange(dead, min=entry_id, max=entry_id, count=1)
            if found:
                return DeadLetter(dead, entry_id, dict(found[0][1]))
        return None

    async def replay_dead_letter(self, entry_id: str) -> tuple[DeadLetter, str]:
        """Re-enqueue a dead letter as a new delivery of the *same* request.

        The entry moves (atomically, once) from the dead-letter stream back to its
        job stream with ``attempt_base`` = the attempt its dead letter ended, so the
        new attempts are numbered after the old ones, and ``replay_of`` = its dead
        letter id. A new ``submitted`` event on the request's stream starts a new
        generation, so the executors' dedupe (which skips requests whose latest
        generation has a result) runs it, and tails read on to its new result.
        The signature still holds: it covers the job payload and the job stream,
        both unchanged. Returns the dead letter and the new entry id.
        """
        cfg = self.config
        dead = await self.dead_letter(entry_id)
        if dead is None:
            raise BadInputError(f"no dead letter {entry_id} (unknown, or already replayed)")
        unproven = dead.proof(self.trust)
        if unproven is not None:
            # Planted with a Redis credential, not written by an executor: a replay
            # would re-run (or roll back to) whatever job it carries.
            raise BadInputError(
                f"dead letter {entry_id} is not signed by a trusted executor ({unproven}); "
                "refusing to replay it"
            )
        source = dead.source_stream or dead.stream.removesuffix(cfg.streams.dead_suffix)
        if source not in cfg.job_streams:
            raise BadInputError(f"dead letter {entry_id} names no job stream ({source!r})")
        job = dead.job()
        fields: list[bytes] = []
        for k, v in dead.fields.items():
            if k not in _DEAD_META:
                fields += [k, v]
        fields += [ATTEMPT_BASE, str(dead.attempt).encode(), REPLAY_OF, entry_id.encode()]
        submitted = b""
        events_key = consumed_key = dead.stream
        ttl = cfg.retention.events_ttl_s
        if job is not None:
            events_key = cfg.events_key(job.request_id)
            consumed_key = cfg.consumed_key(job.request_id, job_digest(dead.fields[b"job"]))
            ttl = max(cfg.retention.idempotency_ttl_s, cfg.retention.events_ttl_s + job.timeout_s)
            submitted = encode(
                _submitted(
                    job,
                    source,
                    dead.fields.get(b"sig", b"").decode("ascii", "replace"),
                    dead.fields.get(b"kid", b"").decode("ascii", "replace"),
                )
            )
        new_id = await self.redis.eval(  # type: ignore[misc]
            _REPLAY,
            4,
            dead.stream,
            source,
            events_key,
            consumed_key,
            entry_id,
            submitted,
            ttl,
            cfg.retention.jobs_maxlen,
            *fields,
        )
        if new_id is None:
            raise BadInputError(f"dead letter {entry_id} was replayed meanwhile")
        new = new_id.decode() if isinstance(new_id, bytes) else str(new_id)
        log.info("dlq.replayed", entry=entry_id, new_entry=new, stream=source)
        return dead, new

    async def original_job(self, request_id: str) -> Job:
        """The job of a request's first ``submitted`` event, only if it is what this
        side signed: anyone who may write events can write a ``submitted`` event, and
        the caller (``retry``) signs what this returns."""
        try:
            submitted = await self.first_event(request_id)
        except DecodeError as exc:
            raise BadInputError(f"request {request_id}: its submitted event is invalid") from exc
        if submitted is None:
            raise BadInputError(f"request {request_id} not found (unknown, or its events expired)")
        if self.keys is None:
            raise BadInputError("checking the original job needs the orchestrator signing key")
        job = submitted.job
        try:
            if job.request_id != request_id:
                raise KeyMaterialError(f"it holds the job of request {job.request_id}")
            if submitted.stream != self.config.stream_for_kind(job_kind(job)):
                raise KeyMaterialError(f"it names stream {submitted.stream!r}")
            self.keys.verify(submitted.stream, encode(job), submitted.job_sig, submitted.job_kid)
        except KeyMaterialError as exc:
            raise BadInputError(
                f"request {request_id}: its submitted event is not a job this orchestrator "
                f"signed ({exc}); refusing to sign it again"
            ) from exc
        return job

    async def request_deploy(self, request: DeployRequest) -> str:
        """Put a deployment request on ``deploy.requests`` (what the platform does)."""
        await self.redis.xadd(
            self.config.streams.requests,
            {"request": encode(request)},
            maxlen=self.config.retention.jobs_maxlen,
            approximate=True,
        )
        return request.request_id
