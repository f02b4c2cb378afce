"""One place that says a task changed: publishing events and the terminal announcement.

Every path that ends a task (the runner's success and failure, lease expiry,
cancel, DELETE, a cache hit born finished) calls :func:`announce_terminal`,
which publishes the final event (SSE streams close on it), counts the metric,
and writes the webhook to the durable outbox (:mod:`app.tasks.outbox`). The
outbox row is unique per task id and status, so announcing twice is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.core import metrics
from app.core.task_vocabulary import TERMINAL_STATUSES, event_of
from app.storage.clients import Services
from app.storage.redis import events
from app.storage.sql.models import Task
from app.tasks.views import task_view

logger = logging.getLogger("ray.serve")


def webhook_payload(task: Task) -> dict[str, Any]:
    """The webhook body: ``{"type": "task.<status>", "data": <the task as GET returns it>}``."""
    return {"type": f"task.{task.status}", "data": task_view(task).model_dump(mode="json")}


async def publish(services: Services, task_id: str, event: dict[str, Any]) -> None:
    if services.aredis is not None:
        await events.apublish(services.aredis, task_id, event)


async def wake_runners(services: Services, reason: str) -> int:
    """Tell the runners there is work (a queued task, a due webhook); 0 if nobody heard."""
    if services.aredis is None:
        return 0
    return await events.notify_runners(services.aredis, reason)


async def announce_terminal(services: Services, task: Task, **extra: Any) -> None:
    """Final event + metric + durable webhook for a task that has just ended."""
    if task.status not in TERMINAL_STATUSES:
        await publish(services, task.id, event_of(task, **extra))
        return
    metrics.record_task_final(task.status)
    if task.webhook_url:
        try:
            await asyncio.to_thread(
                services.store.enqueue_webhook,
                task,
                webhook_payload(task),
                max_attempts=services.settings.webhook_max_attempts,
            )
        except Exception:  # the runner's sweep re-schedules it (see TaskWorker._sweep)
            logger.exception("could not schedule the webhook of %s", task.id)
        else:
            await wake_runners(services, "webhook")
    await publish(services, task.id, event_of(task, **extra))


__all__ = ["announce_terminal", "publish", "wake_runners", "webhook_payload"]
