"""Task events over Redis pub/sub (for Server-Sent Events and live status).

Workers :func:`publish` an event on every status change; an SSE route iterates
:func:`subscribe`. Pub/sub is fire-and-forget: an event published while nobody
listens is gone, and nothing is published while Redis is down. So an SSE route
must send the task's current state from the database right after subscribing,
and should fall back to polling the database if :class:`EventsUnavailable` is
raised. Events are JSON objects; ``task_id`` is added if missing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import redis
import redis.asyncio

from app.storage.redis import as_str
from app.storage.redis.degrade import REDIS_ERRORS, Guard, report_degraded
from app.storage.sql.models import TERMINAL_STATUSES

CHANNEL_PREFIX = "aipp:task-events:"
#: Runner wake-ups: "a task was queued" / "a webhook is due". Payload-free hints;
#: the database stays the queue, so a missed message costs one fallback poll.
WAKE_CHANNEL = "aipp:task-runner:wake"

_default_guard = Guard("events")


class EventsUnavailable(ConnectionError):
    """Redis went away during a subscription; poll the database instead."""


def channel(task_id: str) -> str:
    return f"{CHANNEL_PREFIX}{task_id}"


def _encode(task_id: str, event: Mapping[str, Any]) -> str:
    return json.dumps({"task_id": task_id, **event}, separators=(",", ":"), default=str)


def publish(
    client: redis.Redis, task_id: str, event: Mapping[str, Any], *, guard: Guard | None = None
) -> int:
    """Publish ``event`` for ``task_id``; returns the number of listeners (0 when Redis is down)."""
    message = _encode(task_id, event)
    g = guard or _default_guard
    return int(g.call(lambda: client.publish(channel(task_id), message), lambda: 0))


async def apublish(
    client: redis.asyncio.Redis,
    task_id: str,
    event: Mapping[str, Any],
    *,
    guard: Guard | None = None,
) -> int:
    """:func:`publish` for asyncio code."""
    message = _encode(task_id, event)
    g = guard or _default_guard

    async def run() -> int:
        return int(await client.publish(channel(task_id), message))

    return await g.acall(run, lambda: 0)


async def subscribe(
    client: redis.asyncio.Redis,
    task_id: str,
    *,
    stop_on_terminal: bool = True,
    poll_s: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the events of ``task_id`` as they are published.

    Ends after an event whose ``status`` is terminal (``succeeded``, ``failed``,
    ``cancelled``) when ``stop_on_terminal``; otherwise runs until the consumer
    stops iterating (e.g. the SSE client disconnects). The subscription is
    active once the first ``__anext__`` has run up to its first wait, so
    publish only after starting to iterate (or use :func:`subscription`).
    Raises :class:`EventsUnavailable` if Redis is or becomes unreachable.
    """
    async with subscription(client, task_id) as sub:
        async for event in sub.events(stop_on_terminal=stop_on_terminal, poll_s=poll_s):
            yield event


async def notify_runners(
    client: redis.asyncio.Redis, reason: str = "queued", *, guard: Guard | None = None
) -> int:
    """Wake every TaskRunner replica; returns how many listened (0 when Redis is down)."""
    g = guard or _default_guard

    async def run() -> int:
        return int(await client.publish(WAKE_CHANNEL, reason))

    return await g.acall(run, lambda: 0)


async def runner_wakeups(client: redis.asyncio.Redis, poll_s: float = 30.0) -> AsyncIterator[str]:
    """Yield each wake-up reason published with :func:`notify_runners`.

    Blocks in Redis (no busy loop); raises :class:`EventsUnavailable` when Redis goes away.
    """
    pubsub = client.pubsub()
    try:
        try:
            await pubsub.subscribe(WAKE_CHANNEL)
        except REDIS_ERRORS as exc:
            report_degraded("events", exc)
            raise EventsUnavailable(str(exc)) from exc
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_s)
            except REDIS_ERRORS as exc:
                report_degraded("events", exc)
                raise EventsUnavailable(str(exc)) from exc
            if message is not None and message.get("type") == "message":
                yield as_str(message["data"]) or ""
    finally:
        try:
            await pubsub.aclose()
        except REDIS_ERRORS:
            pass


class _Subscription:
    def __init__(self, pubsub: redis.asyncio.client.PubSub) -> None:
        self._pubsub = pubsub

    async def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event, or ``None`` after ``timeout_s`` without one."""
        try:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=timeout_s
            )
        except REDIS_ERRORS as exc:
            report_degraded("events", exc)
            raise EventsUnavailable(str(exc)) from exc
        if message is None or message.get("type") != "message":
            return None
        try:
            event = json.loads(as_str(message["data"]) or "")
        except ValueError:
            return None
        return event if isinstance(event, dict) else None

    async def events(
        self, *, stop_on_terminal: bool = True, poll_s: float = 1.0
    ) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=poll_s
                )
            except REDIS_ERRORS as exc:
                report_degraded("events", exc)
                raise EventsUnavailable(str(exc)) from exc
            if message is None or message.get("type") != "message":
                continue
            try:
                event = json.loads(as_str(message["data"]) or "")
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            yield event
            if stop_on_terminal and event.get("status") in TERMINAL_STATUSES:
                return


class subscription:  # noqa: N801 - used like a function: ``async with subscription(...)``
    """``async with subscription(client, task_id) as sub: async for e in sub.events(): ...``

    Unlike :func:`subscribe`, the channel is subscribed when the ``async with``
    body starts, so the caller can read the database state *after* that and
    miss nothing in between.
    """

    def __init__(self, client: redis.asyncio.Redis, task_id: str) -> None:
        self._client = client
        self._task_id = task_id
        self._pubsub: redis.asyncio.client.PubSub | None = None

    async def __aenter__(self) -> _Subscription:
        self._pubsub = self._client.pubsub()
        try:
            await self._pubsub.subscribe(channel(self._task_id))
        except REDIS_ERRORS as exc:
            report_degraded("events", exc)
            await self._close()
            raise EventsUnavailable(str(exc)) from exc
        return _Subscription(self._pubsub)

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._pubsub is None:
            return
        pubsub, self._pubsub = self._pubsub, None
        try:
            await pubsub.aclose()
        except REDIS_ERRORS:
            pass


__all__ = [
    "CHANNEL_PREFIX",
    "WAKE_CHANNEL",
    "EventsUnavailable",
    "apublish",
    "channel",
    "notify_runners",
    "runner_wakeups",
    "publish",
    "subscribe",
    "subscription",
]
