"""Task events over Redis pub/sub (for Server-Sent Events and live status).

Workers :func:`publish` an event on every status change; an SSE route iterates
:func:`subscribe`. Pub/sub is fire-and-forget: an event published while nobody
listens is gone, and nothing is published while Redis is down. So an SSE route
must send the task's current state from the database right after subscribing,
and should fall back to polling the database if :class:`EventsUnavailable` is
raised. Events are JSON objects; ``task_id`` is added if missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
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


class EventHub:
    """One Redis subscription per process for every task's events, shared by its watchers.

    A watcher (an SSE stream, a synchronous wait) used to hold a pub/sub connection of
    its own, so a tenant with many open streams held as many Redis connections. Here
    one pattern subscription reads every task's channel and hands each event to the
    local queues of that task's watchers. Events of tasks nobody here watches are
    dropped on arrival. When Redis goes away, every watcher's next read raises
    :class:`EventsUnavailable` (they fall back to the database) and the next
    subscription connects again.
    """

    #: Events one watcher may fall behind by; older ones are dropped (the follower
    #: re-reads the database on a quiet spell, so nothing final is lost).
    QUEUE_SIZE = 64

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._watchers: dict[str, set[asyncio.Queue]] = {}

    @property
    def watched(self) -> int:
        """Tasks watched right now (for tests and metrics)."""
        return len(self._watchers)

    async def _connect(self) -> None:
        async with self._lock:
            if self._reader is not None and not self._reader.done():
                return
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
            except REDIS_ERRORS as exc:
                report_degraded("events", exc)
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()
                raise EventsUnavailable(str(exc)) from exc
            self._pubsub = pubsub
            self._reader = asyncio.get_running_loop().create_task(
                self._read(pubsub), name="task-event-hub"
            )

    async def _read(self, pubsub: redis.asyncio.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30)
                if message is None or message.get("type") != "pmessage":
                    continue
                task_id = (as_str(message["channel"]) or "")[len(CHANNEL_PREFIX) :]
                queues = self._watchers.get(task_id)
                if not queues:
                    continue
                try:
                    event = json.loads(as_str(message["data"]) or "")
                except ValueError:
                    continue
                if isinstance(event, dict):
                    for queue in queues:
                        _offer(queue, event)
        except REDIS_ERRORS as exc:
            report_degraded("events", exc)
            for queues in self._watchers.values():
                for queue in queues:
                    _offer(queue, _GONE)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()

    @contextlib.asynccontextmanager
    async def subscription(self, task_id: str) -> AsyncIterator[_HubSubscription]:
        """Like :class:`subscription`: events published once the body runs are seen."""
        await self._connect()
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.QUEUE_SIZE)
        self._watchers.setdefault(task_id, set()).add(queue)
        try:
            yield _HubSubscription(queue)
        finally:
            watchers = self._watchers.get(task_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[task_id]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                await self._reader
            self._reader = None


_GONE: dict[str, Any] = {"__events_unavailable__": True}


def _offer(queue: asyncio.Queue, event: dict[str, Any]) -> None:
    """Put without blocking the reader: a watcher that fell behind loses its oldest event."""
    while True:
        try:
            queue.put_nowait(event)
            return
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()


class _HubSubscription:
    def __init__(self, queue: asyncio.Queue) -> None:
        self._queue = queue

    async def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event, or ``None`` after ``timeout_s`` without one."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None
        if event is _GONE:
            raise EventsUnavailable("the event subscription was lost")
        return event


_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub(client: redis.asyncio.Redis) -> EventHub:
    """This event loop's hub for ``client`` (one pub/sub connection per process and loop)."""
    loop = asyncio.get_running_loop()
    per_loop = _hubs.setdefault(loop, {})
    found = per_loop.get(id(client))
    if found is None or found._client is not client:
        found = per_loop[id(client)] = EventHub(client)
    return found


__all__ = [
    "CHANNEL_PREFIX",
    "EventHub",
    "WAKE_CHANNEL",
    "EventsUnavailable",
    "apublish",
    "channel",
    "hub",
    "notify_runners",
    "runner_wakeups",
    "publish",
    "subscribe",
    "subscription",
]
