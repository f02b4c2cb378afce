"""Fail-open behaviour when Redis is unavailable.

Redis only holds expendable state, so its outage must never fail a request or
lose a task: the cache misses, idempotency is skipped, the rate limiter allows.
Each component wraps its Redis calls in a :class:`Guard`, which

- catches connection errors, timeouts and other Redis errors, returns the
  component's fallback and reports the event;
- after a failure, skips Redis entirely for ``cooldown_s`` (a small circuit
  breaker), so a black-holed Redis costs one socket timeout per cooldown, not
  one per request;
- logs a warning at most once per ``LOG_INTERVAL_S`` per component.

Metrics: set the module attribute :data:`on_degraded` to a callable taking the
component name (``"cache"``, ``"idempotency"``, ``"ratelimit"``, ``"events"``);
it is called once per degraded operation. :func:`degraded_counts` gives totals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

log = logging.getLogger("aipp.redis")

T = TypeVar("T")

#: What counts as "Redis is unavailable". ``OSError`` covers socket errors that
#: escape the client's own wrapping.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

#: Seconds between two warnings for the same component.
LOG_INTERVAL_S = 60.0

#: Metrics hook: ``on_degraded(component)`` for every degraded operation.
on_degraded: Callable[[str], None] | None = None

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_last_logged: dict[str, float] = {}


def report_degraded(component: str, exc: BaseException | None = None) -> None:
    """Count one degraded operation of ``component``, log (rate limited), call the hook."""
    now = time.monotonic()
    with _lock:
        _counts[component] += 1
        last = _last_logged.get(component)
        should_log = last is None or now - last >= LOG_INTERVAL_S
        if should_log:
            _last_logged[component] = now
    if should_log:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "circuit open"
        log.warning("Redis unavailable for %s, failing open (%s)", component, reason)
    hook = on_degraded
    if hook is not None:
        try:
            hook(component)
        except Exception:  # a metrics bug must not break the request
            log.exception("on_degraded hook failed")


def degraded_counts() -> dict[str, int]:
    """Degraded operations per component since start (or the last reset)."""
    with _lock:
        return dict(_counts)


def reset_degraded_counts() -> None:
    with _lock:
        _counts.clear()
        _last_logged.clear()


class Guard:
    """Run Redis calls for one component with a fallback and a short circuit breaker."""

    def __init__(
        self,
        component: str,
        *,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.component = component
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        """True while Redis is being skipped after a recent failure."""
        return self._clock() < self._open_until

    def trip(self, exc: BaseException | None = None) -> None:
        self._open_until = self._clock() + self.cooldown_s
        report_degraded(self.component, exc)

    def reset(self) -> None:
        self._open_until = 0.0

    def call(self, fn: Callable[[], T], fallback: Callable[[], T]) -> T:
        if self.is_open:
            report_degraded(self.component)
            return fallback()
        try:
            return fn()
        except REDIS_ERRORS as exc:
            self.trip(exc)
            return fallback()

    async def acall(self, fn: Callable[[], Awaitable[T]], fallback: Callable[[], T]) -> T:
        if self.is_open:
            report_degraded(self.component)
            return fallback()
        try:
            return await fn()
        except REDIS_ERRORS as exc:
            self.trip(exc)
            return fallback()


__all__ = [
    "LOG_INTERVAL_S",
    "REDIS_ERRORS",
    "Guard",
    "degraded_counts",
    "on_degraded",
    "report_degraded",
    "reset_degraded_counts",
]
