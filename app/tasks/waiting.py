"""Waiting for a task to end from any replica (the synchronous /v1/summarize path).

Subscribes to the task's event channel first, then reads the database, so the
final event cannot fall in between; the database is re-read every few seconds
as well, so a lost event (Redis down, a runner killed between its commit and
its publish) costs seconds, never the whole timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from app.storage.clients import Services
from app.storage.redis.events import EventsUnavailable, subscription
from app.storage.sql.models import TERMINAL_STATUSES, Task
from app.storage.sql.tasks import TaskStore

RECHECK_S = 2.0


async def sleep_until_due(store: TaskStore, wake: asyncio.Event, poll_s: float) -> None:
    """Sleep until ``wake`` is set, the next due time in the database, or ``poll_s``."""
    timeout = poll_s
    try:
        due = await asyncio.to_thread(store.next_due)
    except Exception:
        due = None
    if due is not None:
        until = (due - datetime.now(UTC)).total_seconds() + 0.05
        # Floor: a due row another replica holds must not make this a busy loop.
        timeout = max(0.5, min(timeout, until))
    try:
        await asyncio.wait_for(wake.wait(), timeout)
    except TimeoutError:
        pass


async def wait_for_terminal(services: Services, task_id: str, timeout_s: float) -> Task | None:
    """The task once terminal, or as it is at the deadline; ``None`` if it was deleted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    store = services.store

    async def current() -> Task | None:
        return await asyncio.to_thread(store.get, task_id)

    if services.aredis is not None:
        with contextlib.suppress(EventsUnavailable):
            async with subscription(services.aredis, task_id) as sub:
                task = await current()
                if task is None or task.status in TERMINAL_STATUSES:
                    return task
                while (remaining := deadline - loop.time()) > 0:
                    event = await sub.next_event(min(remaining, RECHECK_S))
                    if event is None or event.get("status") in TERMINAL_STATUSES:
                        task = await current()
                        if task is None or task.status in TERMINAL_STATUSES:
                            return task
                return await current()
    while True:
        task = await current()
        if task is None or task.status in TERMINAL_STATUSES or loop.time() >= deadline:
            return task
        await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))


__all__ = ["wait_for_terminal"]
