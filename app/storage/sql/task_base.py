"""What every part of the task store shares: settings, sessions, exceptions, column rules.

:class:`~app.storage.sql.tasks.TaskStore` is composed of mixins (claims, queries,
webhook outbox) that all build on :class:`TaskStoreBase`; keeping the shared
pieces here lets them import one module and never each other.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.storage.sql.engine import is_sqlite, writer
from app.storage.sql.models import (
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Task,
    TaskStatus,
    utcnow,
)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

_STAGE_TIMESTAMP = {
    TaskStatus.QUEUED: "queued_at",
    TaskStatus.TRANSCRIBING: "transcribing_at",
    TaskStatus.SUMMARIZING: "summarizing_at",
}
# Stage order for transition(): a worker may stay or move forward, never back.
_STAGE_ORDER = {TaskStatus.TRANSCRIBING: 1, TaskStatus.SUMMARIZING: 2}
# Columns a worker may set through transition()/succeed(); identity and
# scheduling columns are managed by the store only.
_WORKER_FIELDS = frozenset(
    {
        "audio_sha256",
        "audio_uri",
        "audio_filename",
        "duration_s",
        "options",
        "result",
        "error_code",
        "error_message",
        "cached",
    }
)
# Columns a submission may set on a new task.
_INPUT_FIELDS = frozenset(
    {
        "task_id",
        "audio_sha256",
        "audio_uri",
        "audio_filename",
        "audio_url",
        "duration_s",
        "options",
        "webhook_url",
        "idempotency_key",
        "idempotency_fingerprint",
    }
)
_RUNNING = [s.value for s in RUNNING_STATUSES]
_TERMINAL = [s.value for s in TERMINAL_STATUSES]


def _aware(value: datetime) -> datetime:
    """Aggregates (MIN) bypass the column type on SQLite: mark naive values UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _update() -> sa.Update:
    # Plain SQL UPDATEs: no ORM session sync (which would add RETURNING and
    # muddle rowcount); every method re-reads the row it returns.
    return sa.update(Task).execution_options(synchronize_session=False)


class TaskStoreError(Exception):
    pass


class TaskNotFound(TaskStoreError, LookupError):
    pass


class LeaseLost(TaskStoreError):
    """The worker no longer owns the task (lease expired or claimed by another worker)."""


class TaskCancelled(TaskStoreError):
    """A cancel was requested; the task is now ``cancelled`` and the worker must stop."""


class InvalidTransition(TaskStoreError, ValueError):
    pass


class DuplicateIdempotencyKey(TaskStoreError):
    """The tenant already has a task for this ``Idempotency-Key`` (within its lifetime)."""

    def __init__(self, existing: Task | None) -> None:
        super().__init__(existing.id if existing is not None else "unknown task")
        self.existing = existing


class TaskStoreBase:
    """The engine, clock and retry policy, and the short sessions every method opens."""

    def __init__(
        self,
        engine: Engine,
        *,
        backoff_base_s: float = 5.0,
        backoff_max_s: float = 600.0,
        idempotency_ttl_s: float = 24 * 3600,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.idempotency_ttl = timedelta(seconds=idempotency_ttl_s)
        self._writer = writer(engine)
        self._sqlite = is_sqlite(engine)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock

    # --- sessions ------------------------------------------------------------

    def _read(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _write(self) -> Session:
        return Session(self._writer, expire_on_commit=False)

    def backoff(self, attempts: int) -> timedelta:
        """Delay before retry number ``attempts`` (1-based): base * 2**(attempts-1), capped."""
        seconds = self.backoff_base_s * (2 ** max(0, attempts - 1))
        return timedelta(seconds=min(seconds, self.backoff_max_s))

    # The one read every part re-reads its rows through, so it lives with the sessions.
    def get(self, task_id: str, tenant_id: str | None = None) -> Task | None:
        """The task, or ``None`` if it does not exist or belongs to another tenant."""
        with self._read() as session:
            task = session.get(Task, task_id)
            if task is None or (tenant_id is not None and task.tenant_id != tenant_id):
                return None
            return task


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "DuplicateIdempotencyKey",
    "InvalidTransition",
    "LeaseLost",
    "TaskCancelled",
    "TaskNotFound",
    "TaskStoreBase",
    "TaskStoreError",
]
