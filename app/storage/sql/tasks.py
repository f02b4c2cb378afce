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
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.storage.sql.engine import is_sqlite, writer
from app.storage.sql.models import (
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Task,
    TaskSource,
    TaskStatus,
    new_id,
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
_RUNNING = [s.value for s in RUNNING_STATUSES]
_TERMINAL = [s.value for s in TERMINAL_STATUSES]


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


class BadCursor(ValueError):
    """A pagination cursor that this store did not produce (answer 400/422)."""


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), task_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, task_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(task_id, str) or not task_id:
            raise ValueError("incomplete cursor")
        return when.astimezone(UTC), task_id
    except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
        raise BadCursor("invalid cursor") from exc


class TaskStore:
    """Task persistence and the queue protocol on top of one SQLAlchemy engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        backoff_base_s: float = 5.0,
        backoff_max_s: float = 600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
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

    # --- creation --------------------------------------------------------------

    def create(
        self,
        *,
        tenant_id: str,
        audio_sha256: str | None = None,
        audio_uri: str | None = None,
        audio_filename: str | None = None,
        audio_url: str | None = None,
        duration_s: float | None = None,
        options: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        max_attempts: int = 3,
        source: TaskSource | str = TaskSource.API,
        task_id: str | None = None,
    ) -> Task:
        """Insert a ``queued`` task and return it (committed: safe to answer 202)."""
        if audio_uri is None and audio_url is None:
            raise ValueError("a task needs audio_uri (uploaded) or audio_url")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        now = self.clock()
        task = Task(
            id=task_id or new_id(),
            tenant_id=tenant_id,
            status=TaskStatus.QUEUED.value,
            source=TaskSource(source).value,
            audio_sha256=audio_sha256,
            audio_uri=audio_uri,
            audio_filename=audio_filename,
            audio_url=audio_url,
            duration_s=duration_s,
            options=dict(options or {}),
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            created_at=now,
            updated_at=now,
            queued_at=now,
        )
        with self._write() as session:
            session.add(task)
            session.commit()
        return task

    def create_finished(
        self,
        *,
        tenant_id: str,
        result: Mapping[str, Any] | None,
        status: TaskStatus | str = TaskStatus.SUCCEEDED,
        source: TaskSource | str = TaskSource.BATCH,
        cached: bool = False,
        audio_sha256: str | None = None,
        audio_uri: str | None = None,
        audio_filename: str | None = None,
        audio_url: str | None = None,
        duration_s: float | None = None,
        options: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        started_at: datetime | None = None,
        task_id: str | None = None,
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
        task = Task(
            id=task_id or new_id(),
            tenant_id=tenant_id,
            status=status.value,
            source=TaskSource(source).value,
            cached=cached,
            audio_sha256=audio_sha256,
            audio_uri=audio_uri,
            audio_filename=audio_filename,
            audio_url=audio_url,
            duration_s=duration_s,
            options=dict(options or {}),
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
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
        with self._write() as session:
            session.add(task)
            session.commit()
        return task

    # --- reading -----------------------------------------------------------------

    def get(self, task_id: str, tenant_id: str | None = None) -> Task | None:
        """The task, or ``None`` if it does not exist or belongs to another tenant."""
        with self._read() as session:
            task = session.get(Task, task_id)
            if task is None or (tenant_id is not None and task.tenant_id != tenant_id):
                return None
            return task

    def list(
        self,
        tenant_id: str,
        *,
        status: TaskStatus | str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> tuple[builtins.list[Task], str | None]:
        """A page of the tenant's tasks, newest first, and the cursor of the next page.

        ``next_cursor`` is ``None`` on the last page. Raises :class:`BadCursor`
        for a cursor this store did not produce.
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        query = select(Task).where(Task.tenant_id == tenant_id)
        if status is not None:
            query = query.where(Task.status == TaskStatus(status).value)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    col(Task.created_at) < created_at,
                    sa.and_(col(Task.created_at) == created_at, col(Task.id) < last_id),
                )
            )
        query = query.order_by(col(Task.created_at).desc(), col(Task.id).desc()).limit(limit + 1)
        with self._read() as session:
            rows = builtins.list(session.exec(query).all())
        items = rows[:limit]
        next_cursor = (
            encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        )
        return items, next_cursor

    def count_queued(self) -> int:
        """Tasks waiting for a worker (including those in retry backoff): the autoscaling signal."""
        query = select(sa.func.count()).select_from(Task).where(Task.status == TaskStatus.QUEUED)
        with self._read() as session:
            return int(session.exec(query).one())

    def count_by_status(self) -> dict[str, int]:
        query = select(Task.status, sa.func.count()).group_by(Task.status)
        with self._read() as session:
            return {status: int(n) for status, n in session.exec(query).all()}

    def find_by_idempotency_key(
        self, tenant_id: str, idempotency_key: str, *, since: datetime | None = None
    ) -> Task | None:
        """The newest task created with this key (optionally after ``since``).

        The durable fallback for idempotency while Redis is unavailable.
        """
        query = select(Task).where(
            Task.tenant_id == tenant_id, Task.idempotency_key == idempotency_key
        )
        if since is not None:
            query = query.where(col(Task.created_at) >= since)
        query = query.order_by(col(Task.created_at).desc()).limit(1)
        with self._read() as session:
            return session.exec(query).first()

    # --- the queue -----------------------------------------------------------------

    def _claimable(self, now: datetime) -> sa.ColumnElement[bool]:
        queued = sa.and_(
            col(Task.status) == TaskStatus.QUEUED.value,
            sa.or_(col(Task.not_before).is_(None), col(Task.not_before) <= now),
        )
        abandoned = sa.and_(
            col(Task.status).in_(_RUNNING),
            col(Task.lease_expires_at) < now,
            col(Task.attempts) < col(Task.max_attempts),
            sa.not_(col(Task.cancel_requested)),
        )
        return sa.or_(queued, abandoned)

    def reap_expired(self) -> int:
        """Finish running tasks whose lease expired and that may not run again.

        Those with ``cancel_requested`` become ``cancelled``; those that spent
        their last attempt become ``failed`` (``worker_lost``). :meth:`claim_next`
        does this too; returns how many tasks it finished.
        """
        with self._write() as session:
            n = self._reap(session, self.clock())
            session.commit()
        return n

    @staticmethod
    def _reap(session: Session, now: datetime) -> int:
        expired = sa.and_(col(Task.status).in_(_RUNNING), col(Task.lease_expires_at) < now)
        done = {
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": now,
            "updated_at": now,
        }
        cancelled = session.execute(
            _update()
            .where(expired, col(Task.cancel_requested))
            .values(status=TaskStatus.CANCELLED.value, **done)
        ).rowcount
        lost = session.execute(
            _update()
            .where(
                expired,
                sa.not_(col(Task.cancel_requested)),
                col(Task.attempts) >= col(Task.max_attempts),
            )
            .values(
                status=TaskStatus.FAILED.value,
                error_code="worker_lost",
                error_message="the worker stopped renewing its lease on the last attempt",
                **done,
            )
        ).rowcount
        return int(cancelled or 0) + int(lost or 0)

    def claim_next(self, worker_id: str, lease_s: float) -> Task | None:
        """Claim the oldest runnable task for ``worker_id``; ``None`` if there is none.

        The returned task is ``transcribing``, leased until ``now + lease_s``,
        with ``attempts`` already counting this attempt.
        """
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        now = self.clock()
        candidate = (
            select(Task.id)
            .where(self._claimable(now))
            .order_by(col(Task.created_at), col(Task.id))
            .limit(1)
        )
        if not self._sqlite:
            candidate = candidate.with_for_update(skip_locked=True)
        stmt = (
            _update()
            .where(col(Task.id) == candidate.scalar_subquery(), self._claimable(now))
            .values(
                status=TaskStatus.TRANSCRIBING.value,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=col(Task.attempts) + 1,
                not_before=None,
                transcribing_at=now,
                summarizing_at=None,
                updated_at=now,
            )
            .returning(col(Task.id))
        )
        with self._write() as session:
            self._reap(session, now)
            claimed_id = session.execute(stmt).scalar_one_or_none()
            session.commit()
        if claimed_id is None:
            return None
        return self.get(claimed_id)

    def renew_lease(self, task_id: str, worker_id: str, lease_s: float) -> Task:
        """Extend the lease to ``now + lease_s``.

        Raises :class:`LeaseLost`, or :class:`TaskCancelled` after a cancel request.
        """
        now = self.clock()
        return self._owned_update(
            task_id,
            worker_id,
            now,
            {"lease_expires_at": now + timedelta(seconds=lease_s), "updated_at": now},
        )

    def transition(
        self, task_id: str, worker_id: str, new_status: TaskStatus | str, **fields: Any
    ) -> Task:
        """Move a leased task to ``new_status`` (stamping ``<stage>_at``) and set ``fields``.

        Running stages may repeat or move forward (``transcribing`` ->
        ``summarizing``); ``succeeded`` and ``failed`` are finished here too
        (prefer :meth:`succeed` / :meth:`fail`). ``fields`` may be any of
        ``result``, ``duration_s``, ``audio_*``, ``options``, ``error_*``, ``cached``.
        Raises :class:`LeaseLost`, :class:`TaskCancelled`, :class:`InvalidTransition`.
        """
        target = TaskStatus(new_status)
        unknown = set(fields) - _WORKER_FIELDS
        if unknown:
            raise ValueError(f"transition() cannot set {sorted(unknown)}")
        if target in (TaskStatus.QUEUED, TaskStatus.CANCELLED):
            raise InvalidTransition(f"use fail(retryable=True) or cancel() for {target}")
        now = self.clock()
        values: dict[str, Any] = {**fields, "status": target.value, "updated_at": now}
        extra_where: builtins.list[sa.ColumnElement[bool]] = []
        if target in RUNNING_STATUSES:
            values[_STAGE_TIMESTAMP[target]] = now
            # Never go back to an earlier stage.
            allowed = [
                s.value for s, order in _STAGE_ORDER.items() if order <= _STAGE_ORDER[target]
            ]
            extra_where.append(col(Task.status).in_(allowed))
        else:
            values.update(finished_at=now, lease_owner=None, lease_expires_at=None)
        return self._owned_update(task_id, worker_id, now, values, extra_where)

    def succeed(
        self, task_id: str, worker_id: str, result: Mapping[str, Any], **fields: Any
    ) -> Task:
        """Finish a leased task as ``succeeded`` with ``result``."""
        fields.setdefault("error_code", None)
        fields.setdefault("error_message", None)
        return self.transition(
            task_id, worker_id, TaskStatus.SUCCEEDED, result=dict(result), **fields
        )

    def fail(
        self,
        task_id: str,
        worker_id: str,
        code: str,
        message: str,
        *,
        retryable: bool,
    ) -> Task:
        """Record a failure. Retryable with attempts left: back to ``queued`` after a
        backoff (``not_before``); otherwise ``failed``. A pending cancel wins:
        the task becomes ``cancelled`` (no exception, the worker is done anyway).
        """
        now = self.clock()
        with self._write() as session:
            task = session.exec(
                select(Task).where(*self._owned_where(task_id, worker_id, now))
            ).first()
            if task is None:
                self._raise_not_owned(session, task_id, worker_id, now)
            assert task is not None
            base: dict[str, Any] = {
                "lease_owner": None,
                "lease_expires_at": None,
                "updated_at": now,
                "error_code": code,
                "error_message": message,
            }
            if task.cancel_requested:
                values = {**base, "status": TaskStatus.CANCELLED.value, "finished_at": now}
            elif retryable and task.attempts < task.max_attempts:
                values = {
                    **base,
                    "status": TaskStatus.QUEUED.value,
                    "queued_at": now,
                    "not_before": now + self.backoff(task.attempts),
                }
            else:
                values = {**base, "status": TaskStatus.FAILED.value, "finished_at": now}
            # Still conditional: the lease could have been lost since the read
            # (PostgreSQL runs this at READ COMMITTED).
            updated = session.execute(
                _update().where(*self._owned_where(task_id, worker_id, now)).values(**values)
            ).rowcount
            if not updated:
                session.rollback()
                raise LeaseLost(task_id)
            session.commit()
        result = self.get(task_id)
        assert result is not None
        return result

    # --- client actions ---------------------------------------------------------

    def cancel(self, task_id: str, tenant_id: str | None = None) -> Task | None:
        """Cancel: a queued task at once; a running one at the worker's next checkpoint.

        Returns the task afterwards (``None`` if not found for this tenant).
        A finished task is returned unchanged; callers can answer 409.
        """
        now = self.clock()
        owner = [col(Task.id) == task_id]
        if tenant_id is not None:
            owner.append(col(Task.tenant_id) == tenant_id)
        with self._write() as session:
            session.execute(
                _update()
                .where(*owner, col(Task.status) == TaskStatus.QUEUED.value)
                .values(
                    status=TaskStatus.CANCELLED.value,
                    cancel_requested=True,
                    finished_at=now,
                    updated_at=now,
                    not_before=None,
                )
            )
            session.execute(
                _update()
                .where(*owner, col(Task.status).in_(_RUNNING))
                .values(cancel_requested=True, updated_at=now)
            )
            session.commit()
        return self.get(task_id, tenant_id)

    def delete(self, task_id: str, tenant_id: str | None = None) -> bool:
        """Delete the task row; ``False`` if not found for this tenant.

        The caller removes the audio blob if no other task uses the same hash
        (see :meth:`audio_in_use`).
        """
        where = [col(Task.id) == task_id]
        if tenant_id is not None:
            where.append(col(Task.tenant_id) == tenant_id)
        with self._write() as session:
            deleted = session.execute(
                sa.delete(Task).execution_options(synchronize_session=False).where(*where)
            ).rowcount
            session.commit()
        return bool(deleted)

    def audio_in_use(self, audio_sha256: str) -> bool:
        query = select(Task.id).where(Task.audio_sha256 == audio_sha256).limit(1)
        with self._read() as session:
            return session.exec(query).first() is not None

    def record_webhook(
        self, task_id: str, attempts: builtins.list[Mapping[str, Any]], delivered: bool
    ) -> Task | None:
        """Append webhook delivery attempts (e.g. ``Attempt.to_dict()``) and set the status."""
        with self._write() as session:
            # Row lock on PostgreSQL (SQLite holds the write lock already).
            task = session.get(Task, task_id, with_for_update=True)
            if task is None:
                return None
            task.webhook_attempts = [*task.webhook_attempts, *(dict(a) for a in attempts)]
            task.webhook_status = "delivered" if delivered else "failed"
            task.updated_at = self.clock()
            session.add(task)
            session.commit()
            return task

    # --- internals ---------------------------------------------------------------

    @staticmethod
    def _owned_where(task_id: str, worker_id: str, now: datetime) -> builtins.list[Any]:
        return [
            col(Task.id) == task_id,
            col(Task.lease_owner) == worker_id,
            col(Task.lease_expires_at) > now,
            col(Task.status).in_(_RUNNING),
        ]

    def _owned_update(
        self,
        task_id: str,
        worker_id: str,
        now: datetime,
        values: dict[str, Any],
        extra_where: builtins.list[sa.ColumnElement[bool]] | None = None,
    ) -> Task:
        where = self._owned_where(task_id, worker_id, now)
        with self._write() as session:
            # A pending cancel wins over any progress the worker reports.
            cancelled = session.execute(
                _update()
                .where(*where, col(Task.cancel_requested))
                .values(
                    status=TaskStatus.CANCELLED.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
            ).rowcount
            if cancelled:
                session.commit()
                raise TaskCancelled(task_id)
            updated = session.execute(
                _update().where(*where, *(extra_where or [])).values(**values)
            ).rowcount
            if not updated:
                self._raise_not_owned(session, task_id, worker_id, now)
            session.commit()
        task = self.get(task_id)
        assert task is not None
        return task

    @staticmethod
    def _raise_not_owned(session: Session, task_id: str, worker_id: str, now: datetime) -> None:
        task = session.get(Task, task_id)
        exists = task is not None
        status = task.status if task is not None else None
        expires = task.lease_expires_at if task is not None else None
        owned = task is not None and task.lease_owner == worker_id
        session.rollback()
        if not exists:
            raise TaskNotFound(task_id)
        if owned and expires is not None and expires > now and status in _RUNNING:
            # The lease is fine, so the stage order refused the move.
            raise InvalidTransition(f"{task_id}: cannot go back from {task.status}")
        raise LeaseLost(task_id)


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadCursor",
    "InvalidTransition",
    "LeaseLost",
    "TaskCancelled",
    "TaskNotFound",
    "TaskStore",
    "TaskStoreError",
    "decode_cursor",
    "encode_cursor",
]
