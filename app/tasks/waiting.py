"""The background loops' idle wait: until woken, until the next due time, or the poll.

The task runner and the webhook outbox both sleep on this, so a wake-up, a retry
backoff coming due or a lease expiring each end the sleep at the right moment.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from app.storage.sql.tasks import TaskStore


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


__all__ = ["sleep_until_due"]
