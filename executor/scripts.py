"""Lua scripts of the executor: the steps that must be atomic and fenced by ownership.

Fencing (owner and delivery count) and leases come from :mod:`deploystream.leases`;
the request-state reading from :mod:`deploystream.generations`.
"""

from __future__ import annotations

from deploystream.generations import RESULT_CHECK_FN, STATE_FN
from deploystream.leases import FENCE_FN as _FENCE_FN
from deploystream.leases import RELEASE_LEASE, RENEW_LEASE

__all__ = [
    "CONSUME",
    "DEAD_LETTER",
    "FINISH",
    "PUBLISH",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "START",
    "STATE_FN",
]

# The seq of the last event written for this attempt (0: none yet).
_WATERMARK_FN = """
local function watermark(key, attempt)
  local w = redis.call('GET', key)
  if w then
    local a, s = string.match(w, '^(%d+):(%d+)$')
    if a and tonumber(a) == tonumber(attempt) then return tonumber(s) end
  end
  return 0
end
"""

# Appends the triple at ARGV[i] to the events stream (KEYS[2]); the triples start at
# ARGV[first]. The batch's last entry carries its size and the executor's signature
# over it (ARGV[7], ARGV[8]; see deploystream.proofs).
_APPEND_FN = """
local function append(i, first)
  if i + 2 == #ARGV then
    redis.call('XADD', KEYS[2], '*',
               'type', ARGV[i], 'seq', ARGV[i + 1], 'data', ARGV[i + 2],
               'n', (#ARGV - first + 1) / 3, 'sig', ARGV[7], 'kid', ARGV[8])
  else
    redis.call('XADD', KEYS[2], '*',
               'type', ARGV[i], 'seq', ARGV[i + 1], 'data', ARGV[i + 2])
  end
end
"""

# KEYS[1] job stream, KEYS[2] events stream, KEYS[3] publish watermark.
# ARGV group, entry id, consumer, delivery, watermark ttl, attempt,
#      batch signature, key id, then (type, seq, data) triples in seq order.
# Event streams are never trimmed (a late reader replays a request from its
# ``submitted``): the executor caps what one attempt publishes instead
# (retention.request-max-events, see executor.publisher).
# Appends the events of one batch, fenced and idempotent: the watermark holds
# "attempt:seq" of the last event written, so a batch retried after a dropped
# connection (its reply lost, its effect maybe applied) writes nothing twice.
# Returns the watermark seq, or -1 when we are not the owner (nothing written).
PUBLISH = (
    _FENCE_FN
    + _WATERMARK_FN
    + _APPEND_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return -1 end
local top = watermark(KEYS[3], ARGV[6])
for i = 9, #ARGV, 3 do
  local seq = tonumber(ARGV[i + 1])
  if seq > top then
    append(i, 9)
    top = seq
  end
end
redis.call('SET', KEYS[3], ARGV[6] .. ':' .. top, 'EX', ARGV[5])
return top
"""
)

# consume(key, me, expires_at, hold, skew) -> nil when the job may run from entry
# ``me`` ("<stream> <entry id>"), the record then written or extended to outlive the
# expiry by ``hold`` s; else {'replayed', the entry that consumed it} or {'expired',
# seconds past the expiry}, nothing written. The clock is Redis's (TIME).
_CONSUME_FN = """
local function consume(key, me, expires_at, hold, skew)
  local held = redis.call('GET', key)
  local t = redis.call('TIME')
  local left = tonumber(expires_at) - (tonumber(t[1]) + tonumber(t[2]) / 1000000)
  if held then
    if held ~= me then return {'replayed', held} end
  elseif left + tonumber(skew) < 0 then
    return {'expired', string.format('%.1f', -left)}
  end
  local ttl = math.max(math.ceil(left), 0) + tonumber(hold)
  if not held or redis.call('TTL', key) < ttl then
    redis.call('SET', key, me, 'EX', ttl)
  end
  return nil
end
"""

# KEYS[1] job stream, KEYS[2] events stream, KEYS[3] publish watermark, KEYS[4] the
# job's consumed-job record (executor.freshness).
# ARGV group, entry id, consumer, delivery, watermark ttl, attempt,
#      batch signature, key id, expires_at, record hold (s), clock skew (s),
#      then (type, seq, data) triples: the attempt's opening events (seq 1, 2, ...).
# Starts an attempt in one round trip: fenced, it reads the state of the request's
# latest generation and, unless that has a result already, checks and writes the
# consumed-job record, writes the opening events and sets the watermark (as PUBLISH
# would). Returns {state, detail}: 'lost' (not the owner: nothing done), 'result' (a
# duplicate if the result entry, returned third as {data, sig, kid, n}, verifies:
# the caller acks; nothing written), 'replayed' (another entry of this signed job
# was consumed: nothing written; detail names it), 'expired' (past its signed
# expiry on Redis's clock: nothing written; detail = seconds past), 'deep'
# (undecided within 64 entries: nothing written; the caller reads further, then
# checks the record with CONSUME and publishes the usual way), else the state
# before the events were written ('empty' | 'submitted' | 'running'). Except for
# 'replayed' and 'expired', detail is every cancel_requested of the generation as
# {data, sig, kid, entry id} (Lua cannot check a signature: the caller verifies them).
START = (
    _FENCE_FN
    + _WATERMARK_FN
    + _APPEND_FN
    + STATE_FN
    + _CONSUME_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {'lost', {}} end
local state, cancel, last = generation(KEYS[2])
if state == 'result' then return {state, cancel, last} end
if state == 'deep' then return {state, cancel} end
local refused = consume(KEYS[4], KEYS[1] .. ' ' .. ARGV[2], ARGV[9], ARGV[10], ARGV[11])
if refused then return refused end
local top = watermark(KEYS[3], ARGV[6])
for i = 12, #ARGV, 3 do
  local seq = tonumber(ARGV[i + 1])
  if seq > top then  -- a retry whose first reply was lost writes nothing twice
    append(i, 12)
    top = seq
  end
end
redis.call('SET', KEYS[3], ARGV[6] .. ':' .. top, 'EX', ARGV[5])
return {state, cancel}
"""
)

# KEYS[1] job stream, KEYS[2] the job's consumed-job record.
# ARGV group, entry id, consumer, delivery, expires_at, record hold (s), clock skew (s).
# START's consumption check on its own, fenced, for the rare start that START left
# undecided ('deep'). Returns {'ok', ''}, {'lost', ''}, or START's refusals.
CONSUME = (
    _FENCE_FN
    + _CONSUME_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {'lost', ''} end
local refused = consume(KEYS[2], KEYS[1] .. ' ' .. ARGV[2], ARGV[5], ARGV[6], ARGV[7])
if refused then return refused end
return {'ok', ''}
"""
)

# KEYS[1] job stream, KEYS[2] events stream, KEYS[3] publish watermark.
# ARGV group, entry id, consumer, delivery, events ttl, seq, data,
#      signature, key id (a batch of one: see deploystream.proofs), mode.
# mode 'check': a result already there is returned for the caller to verify (3,
# nothing done); 'ack': it verified -- ack only (2); 'publish': it did not (written
# with a Redis credential, not by an executor) -- publish ours anyway (1).
# Publish the terminal result and XACK in one step, only while we own the entry.
# Returns {1} published + acked, {2} acked only (the request already had a result:
# never a second one), {0} not the owner (nothing done), or {3, result entry}. A
# retry of a FINISH whose reply was lost finds the entry acked and the result
# there, and returns {2}.
FINISH = (
    _FENCE_FN
    + STATE_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
  if type(p) == 'table' and not p.err and #p == 0 and request_state(KEYS[2]) == 'result' then
    return {2}
  end
  return {0}
end
local status = 1
local state, _, last = generation(KEYS[2])
if state == 'result' and ARGV[10] == 'check' then
  return {3, last[1], last[2], last[3], last[4]}
end
if state == 'result' and ARGV[10] ~= 'publish' then
  status = 2
else
  redis.call('XADD', KEYS[2], '*', 'type', 'result', 'seq', ARGV[6], 'data', ARGV[7],
             'n', 1, 'sig', ARGV[8], 'kid', ARGV[9])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {status}
"""
)

# KEYS[1] job stream, KEYS[2] dead-letter stream, KEYS[3] events stream (may be a
# placeholder when no request id is readable).
# ARGV group, entry id, consumer, delivery, dead maxlen, events ttl,
#      mode, result data, result signature, key id, forged, believed (see
#      deploystream.generations.RESULT_CHECK_FN), then the dead entry's fields as
#      name/value pairs (ending with the executor's proof over them).
# mode: 'none' publish no result; 'error' publish it unless the request already has
# one; 'rejected' publish it only if no executor has run this generation yet (a
# forged entry naming someone else's live request must not end that request).
# Only a result the caller verified counts: any other stops the step (nothing done)
# with {'result', ...} for the caller to verify. A planted result (no executor's
# signature) must not keep the request from its terminal error.
# Returns {0} not the owner (nothing done), {1} dead-lettered, {2} dead-lettered +
# result.
DEAD_LETTER = (
    _FENCE_FN
    + STATE_FN
    + RESULT_CHECK_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {0} end
local publish = false
if ARGV[7] ~= 'none' then
  local state, _, last = generation(KEYS[3], id_set(ARGV[11]))
  if state == 'result' and last[5] ~= ARGV[12] then return result_check(last) end
  if ARGV[7] == 'error' then publish = state ~= 'result' end
  if ARGV[7] == 'rejected' then publish = state == 'empty' or state == 'submitted' end
end
local fields = {}
for i = 13, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
local published = 1
if publish then
  redis.call('XADD', KEYS[3], '*', 'type', 'result', 'seq', 1, 'data', ARGV[8],
             'n', 1, 'sig', ARGV[9], 'kid', ARGV[10])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  published = 2
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return {published}
"""
)
