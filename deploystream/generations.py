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
# itself), and the data of its latest cancel_requested ('' for none).
# request_state(key) -> the state alone, 'deep' read as 'running'.
STATE_FN = """
local function generation(key)
  local entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 64)
  local state = nil
  local cancel = ''
  for _, e in ipairs(entries) do
    local f = e[2]
    local t, d = nil, ''
    for i = 1, #f, 2 do
      if f[i] == 'type' then t = f[i + 1] elseif f[i] == 'data' then d = f[i + 1] end
    end
    if t == 'cancel_requested' then
      if cancel == '' then cancel = d end
    elseif state == nil and (t == 'result' or t == 'submitted') then
      return t, cancel
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
