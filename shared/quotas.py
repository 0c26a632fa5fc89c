"""Per-tenant limits, kept in Redis so that they hold across every API process and host.

- `RateLimiter`: a token bucket per tenant (requests a second, and a burst above
  that), timed by the Redis server's clock, so that processes whose clocks differ
  share one bucket. It answers how long to wait, which becomes 429's Retry-After.
- `QueueCap`: at most N unfinished (queued or running) experiments per tenant. A
  submit or a sweep reserves all its ids in one script or none of them, so that a
  sweep over the cap queues nothing, and two submits at once cannot both pass it.
"""

from typing import NamedTuple

from redis import Redis

from shared.store import exp_key


def rate_key(tenant: str) -> str:
    return f"gradtrace:rate:{tenant}"


def active_key(tenant: str) -> str:
    """The tenant's reserved experiment ids, scored by the time of the reservation (ms)."""
    return f"gradtrace:active:{tenant}"


# KEYS: the bucket.  ARGV: tokens a second, burst.  Returns the seconds to wait, "0" when the request may go.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""

# KEYS: the tenant's active set.  ARGV: cap, grace ms, record key prefix, then the new ids.
# Counts the set; only when the new ids would pass the cap does it look at each member's record
# and drop the finished ones and those whose record is gone (deleted, expired, or a reservation
# whose submit failed) once older than the grace, then counts again. Returns {admitted, count}.
_ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local cap, grace, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local adding = #ARGV - 3
local count = redis.call('ZCARD', KEYS[1])
if count + adding > cap then
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local status = redis.call('HGET', prefix .. members[i], 'status')
    if status == 'succeeded' or status == 'failed' or status == 'cancelled'
        or (not status and tonumber(members[i + 1]) < now - grace) then
      redis.call('ZREM', KEYS[1], members[i])
    end
  end
  count = redis.call('ZCARD', KEYS[1])
  if count + adding > cap then return {0, count} end
end
for i = 4, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
return {1, count + adding}
"""


class RateLimiter:
    """A token bucket per tenant: `rate` requests a second on average, `burst` at once."""

    def __init__(self, redis: Redis, rate: float, burst: int):
        self.rate = rate
        self.burst = max(1, burst)
        self._take = redis.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, tenant: str) -> int:
        """Take one request from the tenant's bucket: 0 if it may go, else whole seconds to wait (at least 1)."""
        if not self.enabled:
            return 0
        wait = float(self._take(keys=[rate_key(tenant)], args=[self.rate, self.burst]))
        return 0 if wait == 0 else max(1, int(-(-wait // 1)))


class Admission(NamedTuple):
    admitted: bool
    count: int


class QueueCap:
    """At most `cap` unfinished experiments per tenant (0: no cap)."""

    # Seconds a reservation counts before its record exists: the submit writes it right after.
    GRACE_SECONDS = 60

    def __init__(self, redis: Redis, cap: int):
        self.cap = cap
        self.redis = redis
        self._admit = redis.register_script(_ADMIT)

    def admit(self, tenant: str, experiment_ids: list[str]) -> Admission:
        """Reserve places for all the ids, or for none when that would pass the cap."""
        if self.cap <= 0:
            return Admission(True, 0)
        admitted, count = self._admit(
            keys=[active_key(tenant)], args=[self.cap, self.GRACE_SECONDS * 1000, exp_key(""), *experiment_ids]
        )
        return Admission(bool(admitted), int(count))

    def release(self, tenant: str, experiment_ids: list[str]) -> None:
        """Give back the places of ids whose submit did not go through."""
        if self.cap > 0 and experiment_ids:
            self.redis.zrem(active_key(tenant), *experiment_ids)
