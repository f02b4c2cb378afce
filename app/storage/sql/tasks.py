"""The durable task queue: create, claim with a lease, move through stages, finish.

Rules (the database is the only source of truth, so nothing accepted is lost):

- :meth:`TaskStore.create` inserts a ``queued`` task; the caller answers 202.
- :meth:`TaskStore.claim_next` hands the oldest runnable task to exactly one
  worker: it becomes ``transcribing`` with ``lease_owner = worker_id`` and
  ``lease_expires_at = now + lease_s``, and ``attempts`` grows by one.
  Runnable = ``queued`` and past its ``not_before`` (retry backoff), or in a
  running state whose lease has expired (the worker died: crash recovery).
  PostgreSQL selects with ``FOR UPDATE SKIP LOCKED``; SQLite runs one atomic
  ``UPDATE ... WHERE id = (SELECT ...)`` under ``BEGIN IMMEDIATE``.
- The worker calls :meth:`renew_lease` more often than ``lease_s``, and
  :meth:`transition` / :meth:`succeed` / :meth:`fail` as it goes. Each is a
  conditional update on ``lease_owner = worker_id AND lease_expires_at > now``;
  once the lease is lost (expired or taken over) they raise :class:`LeaseLost`
  and the worker must drop the task, because another worker owns it now.
- :meth:`fail` with ``retryable=True`` puts the task back to ``queued`` with an
  exponential backoff (``not_before``) until ``max_attempts`` is spent; then,
  or with ``retryable=False``, the task is ``failed``. A task whose worker dies
  on its last attempt becomes ``failed`` with ``error_code="worker_lost"``.
- :meth:`cancel` cancels a queued task at once; for a running one it sets
  ``cancel_requested`` and the worker's next :meth:`renew_lease` /
  :meth:`transition` / :meth:`succeed` finishes it as ``cancelled`` and raises
  :class:`TaskCancelled`.

Times come from ``clock`` (UTC, the workers' host clocks: keep them in NTP
sync, leases are seconds to minutes long). Every method opens its own short
session and returns detached :class:`~app.storage.sql.models.Task` objects.

:class:`TaskStore` is composed of parts, each in its own module:
:mod:`~app.storage.sql.task_claims` (the queue protocol),
:mod:`~app.storage.sql.task_queries` (reads, pages, counts, retention),
:mod:`~app.storage.sql.webhook_outbox` (webhook deliveries) and
:mod:`~app.storage.sql.task_base` (sessions, exceptions, column rules);
creation lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from app.storage.sql import search
from app.storage.sql.models import Task, TaskSource, TaskStatus, new_id
from app.storage.sql.task_base import (
    _INPUT_FIELDS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    DuplicateIdempotencyKey,
    InvalidTransition,
    LeaseLost,
    TaskCancelled,
    TaskNotFound,
    TaskStoreError,
    _update,
)
from app.storage.sql.task_claims import TaskClaims
from app.storage.sql.task_queries import BadCursor, TaskQueries, decode_cursor, encode_cursor
from app.storage.sql.webhook_outbox import WebhookOutbox


class TaskStore(TaskClaims, TaskQueries, WebhookOutbox):
    """Task persistence and the queue protocol on top of one SQLAlchemy engine."""

    # --- creation --------------------------------------------------------------

    def create(
        self,
        *,
        tenant_id: str,
        max_attempts: int = 3,
        source: TaskSource | str = TaskSource.API,
        **fields: Any,
    ) -> Task:
        """Insert a ``queued`` task and return it (committed: safe to answer 202).

        ``fields`` are the input columns (:data:`_INPUT_FIELDS`). Raises
        :class:`DuplicateIdempotencyKey` when the tenant already has a live task
        with the same ``idempotency_key`` (the unique index decides, so this
        holds with Redis down and across replicas).
        """
        if fields.get("audio_uri") is None and fields.get("audio_url") is None:
            raise ValueError("a task needs audio_uri (uploaded) or audio_url")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        now = self.clock()
        return self._insert(
            self._new_task(
                tenant_id,
                source,
                fields,
                status=TaskStatus.QUEUED.value,
                max_attempts=max_attempts,
                created_at=now,
                updated_at=now,
                queued_at=now,
            )
        )

    def create_finished(
        self,
        *,
        tenant_id: str,
        result: Mapping[str, Any] | None,
        status: TaskStatus | str = TaskStatus.SUCCEEDED,
        source: TaskSource | str = TaskSource.BATCH,
        cached: bool = False,
        error_code: str | None = None,
        error_message: str | None = None,
        started_at: datetime | None = None,
        **fields: Any,
    ) -> Task:
        """Insert a task that is born finished: a cache hit, a batch result, a sync call.

        ``status`` must be terminal; ``started_at`` (when processing began, if
        known) fills the stage timestamps so durations stay meaningful.
        """
        status = TaskStatus(status)
        if not status.terminal:
            raise ValueError("create_finished needs a terminal status")
        now = self.clock()
        begun = started_at or now
        return self._insert(
            self._new_task(
                tenant_id,
                source,
                fields,
                status=status.value,
                cached=cached,
                result=dict(result) if result is not None else None,
                error_code=error_code,
                error_message=error_message,
                attempts=0 if cached else 1,
                max_attempts=1,
                created_at=begun,
                updated_at=now,
                queued_at=begun,
                finished_at=now,
            )
        )

    @staticmethod
    def _new_task(
        tenant_id: str, source: TaskSource | str, fields: Mapping[str, Any], **state: Any
    ) -> Task:
        unknown = set(fields) - _INPUT_FIELDS
        if unknown:
            raise TypeError(f"unknown task fields {sorted(unknown)}")
        inputs = {k: v for k, v in fields.items() if k != "task_id"}
        inputs["options"] = dict(inputs.get("options") or {})
        return Task(
            id=fields.get("task_id") or new_id(),
            tenant_id=tenant_id,
            source=TaskSource(source).value,
            **inputs,
            **state,
        )

    def _insert(self, task: Task) -> Task:
        key = task.idempotency_key
        for _ in range(2):
            try:
                with self._write() as session:
                    session.add(task)
                    session.commit()
                if task.status == TaskStatus.SUCCEEDED.value:
                    search.index_transcript(self._writer, task)  # born finished: index it too
                return task
            except sa.exc.IntegrityError:
                if key is None:
                    raise
                existing = self.find_by_idempotency_key(task.tenant_id, key)
                if existing is None:
                    continue  # purged meanwhile: try again
                if existing.created_at >= self.clock() - self.idempotency_ttl:
                    raise DuplicateIdempotencyKey(existing) from None
                # The key expired (24 h, like the Redis entry): free it for this task.
                with self._write() as session:
                    session.execute(
                        _update().where(col(Task.id) == existing.id).values(idempotency_key=None)
                    )
                    session.commit()
        raise DuplicateIdempotencyKey(self.find_by_idempotency_key(task.tenant_id, key))


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadCursor",
    "DuplicateIdempotencyKey",
    "InvalidTransition",
    "LeaseLost",
    "TaskCancelled",
    "TaskNotFound",
    "TaskStore",
    "TaskStoreError",
    "decode_cursor",
    "encode_cursor",
]
