"""Leases on consumer-group entries, shared by executors and orchestrator services.

An entry is owned by the consumer that holds it in the group's pending list. While
work runs, the owner renews the claim (idle time reset, delivery count kept) so a
long deploy is never handed to a second consumer; a dead owner stops renewing and
its entries go idle past the lease, where a live consumer adopts them.

**Fencing token.** Ownership of a job entry is the pair (consumer, delivery count)
as the group's pending list (``XPENDING``) holds it. Renewing a lease (``XCLAIM …
JUSTID``) keeps the count; an adopter's ``XCLAIM`` increments it. So an owner that
was declared dead and adopted -- even by a new process with the same consumer name
-- fails every fenced step from then on: it can no longer renew, publish an event,
publish the result or ACK. A missing group (Redis restarted without persistence)
counts as "not the owner".

The orchestrator service's entries are fenced by owner alone (it passes delivery
``0``): its requests do not publish anything an adopter could duplicate.
"""

from __future__ import annotations

# is_owner(stream, group, id, consumer, delivery): prepended to every fenced script.
# delivery 0 checks the owner only.
FENCE_FN = """
local function is_owner(stream, group, id, consumer, delivery)
  local p = redis.pcall('XPENDING', stream, group, id, id, 1)
  if type(p) ~= 'table' or p.err or #p == 0 then return false end
  if p[1][2] ~= consumer then return false end
  return tonumber(delivery) == 0 or tonumber(p[1][4]) == tonumber(delivery)
end
"""

# KEYS[1] job stream; ARGV group, entry id, consumer, delivery.
# Renew the claim (resets idle time, keeps the delivery count) only while we own it.
RENEW_LEASE = (
    FENCE_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
)

# KEYS[1] job stream; ARGV group, entry id, consumer, delivery, idle ms.
# Give a lease back (shutdown past its grace): the entry stays pending, owned by us,
# but looks idle for ``idle ms`` so the next adopter takes it without waiting a lease.
RELEASE_LEASE = (
    FENCE_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[5], 'JUSTID')
return 1
"""
)

# KEYS[1] stream; ARGV group, entry id, consumer, delivery. ACK only while we own it.
ACK_IF_OWNER = (
    FENCE_FN
    + """
if not is_owner(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""
)
