"""Leases on consumer-group entries, shared by executors and orchestrator services.

An entry is owned by the consumer that holds it in the group's pending list. While
work runs, the owner renews the claim (idle time reset, delivery count kept) so a
long deploy is never handed to a second consumer; a dead owner stops renewing and
its entries go idle past the lease, where a live consumer adopts them.
"""

from __future__ import annotations

# KEYS[1] stream; ARGV group, entry id, consumer. 1 renewed, 0 not (or no longer) ours.
RENEW_LEASE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""

# KEYS[1] stream; ARGV group, entry id, consumer. ACK only while we still own it.
ACK_IF_OWNER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""
