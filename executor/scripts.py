"""Lua scripts: the steps that must be atomic and fenced by ownership.

Ownership is the consumer that holds the entry in the group's pending list
(``XPENDING``); only the owner may renew the lease or publish the result + ACK.
"""

from __future__ import annotations

# KEYS[1] job stream; ARGV group, entry id, consumer.
# Renew the claim (resets idle time, keeps the delivery count) only while we own it.
RENEW_LEASE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""

# KEYS[1] job stream, KEYS[2] events stream.
# ARGV group, entry id, consumer, events maxlen, events ttl, seq, data.
# Returns 1 published + acked, 2 acked only (a result existed already), 0 not the owner.
FINISH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local status = 1
if #last == 1 and last[1][2][2] == 'result' then
  status = 2
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
             'type', 'result', 'seq', ARGV[6], 'data', ARGV[7])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return status
"""
