"""Following a task until it ends, from any replica: one iterator for every watcher.

The SSE route streams what :func:`follow` yields; the synchronous routes wait
with :func:`wait_for_terminal`, which is the same iterator run to its end. All
the watchers of one replica share one Redis subscription (the event hub).

It subscribes to the task's event channel first, then reads the database, so
the final event cannot fall in between. Without an event for ``recheck_s`` it
re-reads the row, so a lost event (Redis down, a runner killed between its
commit and its publish) costs seconds, never a watcher that waits forever; with
Redis down it polls the database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.core.task_vocabulary import TERMINAL_STATUSES, event_of, is_progress
from app.storage.clients import Services
from app.storage.redis.events import EventsUnavailable, hub
from app.storage.sql.models import Task

RECHECK_S = 5.0
POLL_S = 0.5


async def follow(
    services: Services,
    task_id: str,
    *,
    recheck_s: float = RECHECK_S,
    timeout_s: float | None = None,
    stop: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The task's events: its current state first, then each change of status and each
    progress tick, ending with the terminal event (or the deletion's, or nothing more
    when the task is gone). Ends early at ``timeout_s`` or when ``stop()`` says so."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s

    def wait_for() -> float:
        if deadline is None:
            return recheck_s
        return max(0.0, min(recheck_s, deadline - loop.time()))

    def expired() -> bool:
        return deadline is not None and loop.time() >= deadline

    async def current() -> Task | None:
        return await asyncio.to_thread(services.store.get, task_id)

    async def stopped() -> bool:
        return expired() or (stop is not None and await stop())

    last_status: str | None = None
    if services.aredis is not None:
        with contextlib.suppress(EventsUnavailable):
            async with hub(services.aredis).subscription(task_id) as sub:
                task = await current()  # subscribed first, then read: nothing falls between
                if task is None:
                    return
                last_status = task.status
                yield event_of(task)
                if task.status in TERMINAL_STATUSES:
                    return
                while not await stopped():
                    event = await sub.next_event(wait_for())
                    if event is None or event.get("status") in TERMINAL_STATUSES:
                        row = await current()
                        if row is None:  # deleted: its final event (if heard) says so
                            if event is not None:
                                yield event
                            return
                        if row.status in TERMINAL_STATUSES:
                            yield event_of(row)
                            return
                        if event is not None:
                            # A final event ahead of its row (DELETE of a running task
                            # announces, then removes): it is still the last word.
                            yield event
                            return
                        if row.status != last_status:  # a quiet spell: the row moved on
                            last_status = row.status
                            yield event_of(row)
                        continue
                    if event.get("status") == last_status and is_progress(event):
                        yield event
                        continue
                    last_status = event.get("status")
                    yield event
                return
    # Redis is down or unset: poll the database (coarser, but nothing is missed at the end).
    while True:
        task = await current()
        if task is None:
            return
        if task.status != last_status:
            last_status = task.status
            yield event_of(task)
        if task.status in TERMINAL_STATUSES or await stopped():
            return
        await asyncio.sleep(min(POLL_S, wait_for()) if deadline is not None else POLL_S)


async def wait_for_terminal(
    services: Services, task_id: str, timeout_s: float, *, recheck_s: float = 2.0
) -> Task | None:
    """The task once ended, or as it is at the deadline; ``None`` if it was deleted."""
    last: dict[str, Any] = {}
    async for event in follow(services, task_id, recheck_s=recheck_s, timeout_s=timeout_s):
        last = event
    if last.get("deleted"):
        return None
    return await asyncio.to_thread(services.store.get, task_id)


__all__ = ["follow", "wait_for_terminal"]
