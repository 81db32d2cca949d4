"""Generations of a request's event stream, and reading the latest one's state.

A request's event stream is a sequence of *generations*: each
starts with a ``submitted`` event (the orchestrator's, or the one ``dlq replay``
writes) and ends with at most one ``result``. ``cancel_requested`` (seq 0, written
by the orchestrator) may appear anywhere. Reading backwards, skipping
``cancel_requested``, the first entry tells the state of the latest generation:
``result`` -> terminal; ``submitted`` or nothing -> not started yet; anything else
-> an executor has been running it. :data:`STATE_FN` implements that in Lua.

Requests are read this way by the executors (before starting a job, and before
publishing a result) and by the orchestrator (a cancel is refused once the request
has its result); :data:`STATE_FN` is the one Lua implementation both use.
"""

from __future__ import annotations

# generation(key) -> state, cancel: the state of the latest generation, reading back
# at most 64 entries: 'empty' | 'submitted' | 'result' | 'running', or 'deep' when
# those 64 entries are all of the latest generation (the caller pages further
# itself), and its cancel_requested entries, latest first, as {data, sig, kid, id}
# (Lua cannot check a signature: the caller believes only a signed one), and for
# 'result' the result entry as {data, sig, kid, n, entry id} (for the caller to
# verify). ``forged`` (optional): a set of result entry ids the caller found no
# executor signed; they are passed over as if absent (see RESULT_CHECK_FN).
# request_state(key) -> the state alone, 'deep' read as 'running'.
STATE_FN = """
local function generation(key, forged)
  local entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 64)
  local state = nil
  local cancel = {}
  for _, e in ipairs(entries) do
    local f = e[2]
    local t, d, sig, kid, n = nil, '', '', '', ''
    for i = 1, #f, 2 do
      if f[i] == 'type' then t = f[i + 1]
      elseif f[i] == 'data' then d = f[i + 1]
      elseif f[i] == 'sig' then sig = f[i + 1]
      elseif f[i] == 'kid' then kid = f[i + 1]
      elseif f[i] == 'n' then n = f[i + 1] end
    end
    if t == 'cancel_requested' then
      cancel[#cancel + 1] = {d, sig, kid, e[1]}
    elseif t == 'result' and forged and forged[e[1]] then
      -- planted with a Redis credential: not a result
    elseif state == nil and (t == 'result' or t == 'submitted') then
      return t, cancel, {d, sig, kid, n, e[1]}
    elseif t == 'submitted' then
      return state, cancel
    else
      state = 'running'
    end
  end
  if #entries == 64 then return 'deep', cancel end
  return state or 'empty', cancel
end
local function request_state(key)
  local state = generation(key)
  if state == 'deep' then return 'running' end
  return state
end
"""

# Scripts that must believe only a *verified* result (Lua cannot check a signature)
# take two arguments: ``forged`` (space-separated result entry ids the caller found
# unsigned) and ``believed`` (the id of the result it verified, or ''), and stop at
# any other latest result with ``result_check(last)`` -> {'result', data, sig, kid,
# n, entry id}, nothing done, for the caller to verify and call again
# (deploystream.proofs.past_forged_results runs that loop).
RESULT_CHECK_FN = """
local function id_set(s)
  local set = {}
  for id in string.gmatch(s, '%S+') do set[id] = true end
  return set
end
local function result_check(last)
  return {'result', last[1], last[2], last[3], last[4], last[5]}
end
"""
