"""A calls-per-second budget per endpoint, shared through Redis by every worker on every host.

Hosted providers limit calls per second per API key, and count each item of a batch. Workers that
each kept their own pace would add up past the limit and spend their time in 429s; a token bucket
in Redis (refilled at `rate`, holding at most one second's worth) keeps the total under it.
The clock is Redis's own (TIME), so hosts whose clocks differ still share one pace.
"""

from __future__ import annotations

import hashlib

import redis

from wallet.state.keyspace import Keyspace

# KEYS[1]: the bucket. ARGV: rate per second, burst, calls wanted.
# Returns the seconds to wait before trying again ("0": taken now), as a string (Lua numbers
# returned to Redis are truncated to integers).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= wanted then
  tokens = tokens - wanted
else
  wait = (wanted - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 60)
return tostring(wait)
"""


def endpoint_id(url: str) -> str:
    """A stable name for an endpoint that reveals nothing of its URL (which may hold an API key)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class SharedCallBudget:
    """`take(n)` before sending n calls; sleep what it returns, then take again."""

    def __init__(self, client: redis.Redis, keyspace: Keyspace, url: str, rate: float) -> None:
        self.rate = rate
        self._key = keyspace.rpc_budget(endpoint_id(url))
        self._burst = max(1.0, rate)
        self._take = client.register_script(_TAKE)

    def take(self, calls: int) -> float:
        # A batch bigger than the burst could never be granted whole: the transport keeps its
        # batches within `rate`, and anything larger is granted as its own second of budget.
        wanted = min(float(calls), self._burst)
        return float(self._take(keys=[self._key], args=[self.rate, self._burst, wanted]))
