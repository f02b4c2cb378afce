"""Ending a task early and forgetting it: cancel, delete, and what a deleted task leaves.

Cancel and DELETE from the API and the retention purge of the runner all end
here, so a task's audio and cached result are forgotten the same way whoever
removes it, and every end is announced (event and webhook).
"""

from __future__ import annotations

import asyncio
import math

from app.core.task_vocabulary import TERMINAL_STATUSES, TaskStatus, event_of
from app.storage.clients import Services
from app.storage.sql.models import Task
from app.tasks.announce import announce_terminal, publish
from app.tasks.model_ids import ModelRegistry
from app.tasks.result_cache import drop_result, key_of

#: DELETE never waits longer than this for the model ids (a busy Summarizer must not
#: hold it up); without them the cached result expires by its TTL instead.
MODEL_IDS_WAIT_S = 3.0


def forget(services: Services, task: Task, models: dict[str, str | None] | None) -> None:
    """Remove a deleted task's audio (unless another task uses it) and its cached result.

    Audio is stored per tenant, so only the tenant's own tasks can share it (a blob from
    before per-tenant storage may be shared by any tenant's tasks, so all are counted).
    """
    blobs = services.blobs
    if task.audio_uri and task.audio_sha256:
        tenant = task.tenant_id if blobs.namespace_of(task.audio_uri) else None
        original = blobs.uri_of(task.audio_sha256, tenant)
        if task.audio_uri != original:  # a redacted copy (redact_audio): then the original
            copy = task.audio_uri
            blobs.retire(copy, lambda: services.store.audio_uri_in_use(copy))
        blobs.retire(
            original,
            lambda: services.store.audio_in_use(task.audio_sha256, tenant),
        )
    if models is not None:
        drop_result(services, key_of(task, models))


async def cancel(services: Services, task: Task) -> Task:
    """Cancel and announce: a queued task ends here (event + webhook); a running one
    ends at the runner's next lease renewal, which cancels its pipeline and announces."""
    after = await asyncio.to_thread(services.store.cancel, task.id, task.tenant_id)
    if after is None:
        return task
    if after.status in TERMINAL_STATUSES and task.status not in TERMINAL_STATUSES:
        await announce_terminal(services, after)
    elif after.status not in TERMINAL_STATUSES:
        await publish(services, after.id, event_of(after, cancel_requested=True))
    return after


async def delete(services: Services, models: ModelRegistry, task: Task) -> None:
    """Cancel if it runs, then remove the task, its result, its cached result and audio."""
    if task.status not in TERMINAL_STATUSES:
        task = await cancel(services, task)
        if task.status not in TERMINAL_STATUSES:
            # Running: it ends now for the caller; the runner sees the row gone and stops.
            task.status = TaskStatus.CANCELLED.value
            await announce_terminal(services, task, deleted=True)
    await asyncio.to_thread(services.store.delete, task.id, task.tenant_id)
    ids = None
    if services.cache is not None and task.audio_sha256:
        try:
            ids = await asyncio.wait_for(models.ids(max_age_s=math.inf), MODEL_IDS_WAIT_S)
        except Exception:
            ids = None
    await asyncio.to_thread(forget, services, task, ids)


__all__ = ["cancel", "delete", "forget"]
