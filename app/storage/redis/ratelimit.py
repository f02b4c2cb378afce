"""Token-bucket rate limiting per API key, atomic in Redis (one Lua script via EVALSHA).

Each key has a bucket of ``burst`` tokens refilled at ``rate_per_s``; a request
takes one token (``cost``). The script reads Redis' own clock (``TIME``), so
every API replica sees the same time, and stores ``{tokens, ts}`` in a hash
that expires once the bucket would be full again.

Response headers (:meth:`Decision.headers`) follow the separate-field form of
the IETF draft *RateLimit header fields for HTTP*
(draft-ietf-httpapi-ratelimit-headers-06/07), which is what most clients parse:

- ``RateLimit-Limit``: the bucket size (``burst``);
- ``RateLimit-Remaining``: whole tokens left after this request;
- ``RateLimit-Reset``: seconds until the bucket is full again;
- ``RateLimit-Policy``: ``<burst>;w=<seconds to refill from empty>``;
- and on a denial ``Retry-After``: whole seconds until one token is available
  (answer 429 with these headers).

When Redis is unavailable the request is allowed (``degraded=True``) and no
headers are produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from app.storage.redis import as_str
from app.storage.redis.degrade import Guard

KEY_PREFIX = "aipp:rl:v1:"

_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
local allowed = 0
local retry_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) * 1000 / rate)
end
local full_ms = math.ceil((burst - tokens) * 1000 / rate)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], full_ms + 1000)
return {allowed, tostring(tokens), retry_ms, full_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Whole tokens left after this request.
    remaining: int
    #: Seconds until this request would be allowed (0 when allowed).
    retry_after_s: float
    #: Bucket size (``burst``).
    limit: int
    #: Seconds until the bucket is full again.
    reset_s: float
    #: Refill rate, tokens per second.
    rate_per_s: float = 0.0
    #: True when Redis was unavailable and the request was allowed unchecked.
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (plus ``Retry-After`` on a denial); empty when degraded."""
        if self.degraded:
            return {}
        window = math.ceil(self.limit / self.rate_per_s) if self.rate_per_s > 0 else 0
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
            "RateLimit-Policy": f"{self.limit};w={window}",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimiter:
    """Token buckets in Redis, keyed by whatever identifies the caller (an API key id)."""

    def __init__(self, client: redis.Redis, *, guard: Guard | None = None) -> None:
        self.client = client
        self.guard = guard or Guard("ratelimit")
        self._script = client.register_script(_TOKEN_BUCKET)

    def allow(
        self,
        key: str,
        rate_per_s: float,
        burst: int,
        *,
        cost: int = 1,
        now_ms: int | None = None,
    ) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them.

        ``now_ms`` overrides Redis' clock (tests, or callers with their own
        clock); leave it ``None`` in production.
        """
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        if not 1 <= cost <= burst:
            raise ValueError("cost must be between 1 and burst")

        def run() -> Decision:
            allowed, tokens, retry_ms, full_ms = self._script(
                keys=[KEY_PREFIX + key],
                args=[repr(float(rate_per_s)), burst, cost, "" if now_ms is None else now_ms],
            )
            return Decision(
                allowed=bool(int(allowed)),
                remaining=max(0, math.floor(float(as_str(tokens) or 0))),
                retry_after_s=int(retry_ms) / 1000,
                limit=burst,
                reset_s=int(full_ms) / 1000,
                rate_per_s=rate_per_s,
            )

        def fallback() -> Decision:
            return Decision(True, burst, 0.0, burst, 0.0, rate_per_s, degraded=True)

        return self.guard.call(run, fallback)

    def reset(self, key: str) -> None:
        """Forget ``key``'s bucket (e.g. after raising its limits)."""
        self.guard.call(lambda: self.client.delete(KEY_PREFIX + key), lambda: 0)


__all__ = ["Decision", "RateLimiter"]
