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

from app.storage.sql import search
from app.storage.sql.engine import is_sqlite, writer
from app.storage.sql.models import (
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Task,
    TaskSource,
    TaskStatus,
    Tenant,
    WebhookDelivery,
    WebhookState,
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

    # --- reading -----------------------------------------------------------------

    def get(self, task_id: str, tenant_id: str | None = None) -> Task | None:
        """The task, or ``None`` if it does not exist or belongs to another tenant."""
        with self._read() as session:
            task = session.get(Task, task_id)
            if task is None or (tenant_id is not None and task.tenant_id != tenant_id):
                return None
            return task

    def replace_result(
        self,
        task_id: str,
        tenant_id: str | None,
        result: Mapping[str, Any],
        expected: Mapping[str, Any] | None = None,
    ) -> Task | None:
        """Swap a succeeded task's result (speaker renames re-render it without the models).

        ``expected``: the result the caller read; if another writer changed it meanwhile,
        nothing is written and ``None`` is returned (the caller reads again and retries).
        """
        with self._write() as session:
            task = session.get(Task, task_id)
            if task is None or (tenant_id is not None and task.tenant_id != tenant_id):
                return None
            if task.status != TaskStatus.SUCCEEDED:
                return None
            if expected is not None and task.result != dict(expected):
                return None
            task.result = dict(result)
            task.updated_at = self.clock()
            session.add(task)
            session.commit()
            session.refresh(task)
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

    def count_queued(self, *, ready_only: bool = False) -> int:
        """Tasks waiting for a worker; with ``ready_only``, only those claimable now (not in
        retry backoff): the autoscaling signal, since a task in backoff needs no replica."""
        query = select(sa.func.count()).select_from(Task).where(Task.status == TaskStatus.QUEUED)
        if ready_only:
            now = self.clock()
            query = query.where(sa.or_(col(Task.not_before).is_(None), col(Task.not_before) <= now))
        with self._read() as session:
            return int(session.exec(query).one())

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

    @staticmethod
    def _reap(session: Session, now: datetime) -> builtins.list[str]:
        """Finish running tasks whose lease expired and that may not run again.

        Those with ``cancel_requested`` become ``cancelled``; those that spent
        their last attempt become ``failed`` (``worker_lost``). Returns their ids,
        so the caller can announce them (event + webhook) like any other end.
        """
        expired = sa.and_(col(Task.status).in_(_RUNNING), col(Task.lease_expires_at) < now)
        lost_where = sa.and_(
            expired,
            sa.not_(col(Task.cancel_requested)),
            col(Task.attempts) >= col(Task.max_attempts),
        )
        cancel_where = sa.and_(expired, col(Task.cancel_requested))
        ids = builtins.list(
            session.execute(sa.select(Task.id).where(sa.or_(lost_where, cancel_where))).scalars()
        )
        if not ids:
            return []
        done = {
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": now,
            "updated_at": now,
        }
        session.execute(
            _update()
            .where(cancel_where, col(Task.id).in_(ids))
            .values(status=TaskStatus.CANCELLED.value, **done)
        )
        session.execute(
            _update()
            .where(lost_where, col(Task.id).in_(ids))
            .values(
                status=TaskStatus.FAILED.value,
                error_code="worker_lost",
                error_message="the worker stopped renewing its lease on the last attempt",
                **done,
            )
        )
        return ids

    def claim_next(
        self, worker_id: str, lease_s: float, reaped: builtins.list[str] | None = None
    ) -> Task | None:
        """Claim the oldest runnable task for ``worker_id``; ``None`` if there is none.

        The returned task is ``transcribing``, leased until ``now + lease_s``,
        with ``attempts`` already counting this attempt. Tasks that the same
        transaction finished for good (expired lease, no attempts left, or a
        pending cancel) are appended to ``reaped``.
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
            finished = self._reap(session, now)
            claimed_id = session.execute(stmt).scalar_one_or_none()
            session.commit()
        if reaped is not None:
            reaped.extend(finished)
        if claimed_id is None:
            return None
        return self.get(claimed_id)

    def release(self, task_id: str, worker_id: str) -> bool:
        """Give a leased task back to the queue at once, without spending an attempt.

        For a graceful shutdown (downscale, upgrade): the next replica claims it
        without waiting for the lease to expire. ``False`` if the lease was lost.
        """
        now = self.clock()
        with self._write() as session:
            updated = session.execute(
                _update()
                .where(*self._owned_where(task_id, worker_id, now))
                .values(
                    status=TaskStatus.QUEUED.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=sa.case((col(Task.attempts) > 0, col(Task.attempts) - 1), else_=0),
                    not_before=None,
                    queued_at=now,
                    updated_at=now,
                )
            ).rowcount
            session.commit()
        return bool(updated)

    def next_due(self) -> datetime | None:
        """When the queue next needs a worker without being woken: a retry backoff
        ending, a running task's lease expiring, or a webhook retry falling due."""
        with self._read() as session:
            times = [
                session.exec(
                    select(sa.func.min(Task.not_before)).where(
                        Task.status == TaskStatus.QUEUED.value
                    )
                ).one(),
                session.exec(
                    select(sa.func.min(Task.lease_expires_at)).where(col(Task.status).in_(_RUNNING))
                ).one(),
                session.exec(
                    select(sa.func.min(WebhookDelivery.next_attempt_at)).where(
                        WebhookDelivery.state == WebhookState.PENDING.value
                    )
                ).one(),
            ]
        found = [_aware(t) for t in times if t is not None]
        return min(found) if found else None

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
        task = self.transition(
            task_id, worker_id, TaskStatus.SUCCEEDED, result=dict(result), **fields
        )
        search.index_transcript(self._writer, task)  # the console's transcript search
        return task

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

    # --- the webhook outbox -------------------------------------------------------

    def enqueue_webhook(
        self,
        task: Task,
        payload: Mapping[str, Any],
        *,
        max_attempts: int,
    ) -> WebhookDelivery | None:
        """Schedule the webhook for ``task``'s current (terminal) status, once.

        Idempotent: a second call for the same task id and status finds the
        first row (unique ``(task_id, event)``) and changes nothing, so every
        path that ends a task may call it. ``None`` if the task has no webhook.
        """
        if not task.webhook_url:
            return None
        event = f"task.{task.status}"
        now = self.clock()
        row = WebhookDelivery(
            task_id=task.id,
            tenant_id=task.tenant_id,
            event=event,
            msg_id=f"msg_{task.id}_{task.status}",
            url=task.webhook_url,
            payload=dict(payload),
            max_attempts=max_attempts,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._write() as session:
                session.add(row)
                session.commit()
        except sa.exc.IntegrityError:
            return self.webhook_delivery(task.id, event)
        self._mirror_webhook(task.id, "pending", None)
        return row

    def unscheduled_webhooks(
        self, within_s: float = 86400, limit: int = 100
    ) -> builtins.list[Task]:
        """Finished tasks with a webhook that none was scheduled for (the process that
        ended them died first); the runner's sweep schedules them."""
        since = self.clock() - timedelta(seconds=within_s)
        query = (
            select(Task)
            .where(
                col(Task.status).in_(_TERMINAL),
                col(Task.webhook_url).is_not(None),
                col(Task.webhook_status).is_(None),
                col(Task.finished_at) >= since,
            )
            .limit(limit)
        )
        with self._read() as session:
            return builtins.list(session.exec(query).all())

    def webhook_delivery(self, task_id: str, event: str) -> WebhookDelivery | None:
        query = select(WebhookDelivery).where(
            WebhookDelivery.task_id == task_id, WebhookDelivery.event == event
        )
        with self._read() as session:
            return session.exec(query).first()

    def webhook_deliveries(self, task_id: str) -> builtins.list[WebhookDelivery]:
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.task_id == task_id)
            .order_by(col(WebhookDelivery.created_at))
        )
        with self._read() as session:
            return builtins.list(session.exec(query).all())

    def claim_webhooks(
        self, worker_id: str, lease_s: float, limit: int = 10
    ) -> builtins.list[WebhookDelivery]:
        """Lease up to ``limit`` due deliveries to ``worker_id`` (one sender per message)."""
        now = self.clock()
        due = sa.and_(
            col(WebhookDelivery.state) == WebhookState.PENDING.value,
            col(WebhookDelivery.next_attempt_at) <= now,
            sa.or_(
                col(WebhookDelivery.lease_expires_at).is_(None),
                col(WebhookDelivery.lease_expires_at) < now,
            ),
        )
        pick = (
            select(WebhookDelivery.id)
            .where(due)
            .order_by(col(WebhookDelivery.next_attempt_at))
            .limit(limit)
        )
        if not self._sqlite:
            pick = pick.with_for_update(skip_locked=True)
        with self._write() as session:
            ids = builtins.list(session.execute(pick).scalars())
            if not ids:
                session.rollback()
                return []
            session.execute(
                sa.update(WebhookDelivery)
                .execution_options(synchronize_session=False)
                .where(col(WebhookDelivery.id).in_(ids), due)
                .values(
                    lease_owner=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    updated_at=now,
                )
            )
            session.commit()
        with self._read() as session:
            return builtins.list(
                session.exec(
                    select(WebhookDelivery).where(
                        col(WebhookDelivery.id).in_(ids), WebhookDelivery.lease_owner == worker_id
                    )
                ).all()
            )

    def record_webhook_attempt(
        self,
        delivery_id: str,
        worker_id: str,
        attempt: Mapping[str, Any],
        *,
        ok: bool,
        retryable: bool,
        backoff_s: float,
        backoff_max_s: float = 3600.0,
    ) -> WebhookDelivery | None:
        """Store one attempt; schedule the next with exponential backoff, or close the row.

        The outcome is mirrored on the task (``webhook_attempts``/``webhook_status``)
        while the task exists, so ``GET /v1/tasks/{id}`` shows it.
        """
        now = self.clock()
        with self._write() as session:
            row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None or row.lease_owner != worker_id:
                session.rollback()
                return None
            row.attempts += 1
            row.history = [*row.history, dict(attempt)]
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            if ok:
                row.state = WebhookState.DELIVERED.value
            elif retryable and row.attempts < row.max_attempts:
                delay = min(backoff_s * 2 ** (row.attempts - 1), backoff_max_s)
                retry_after = attempt.get("retry_after_s")
                if isinstance(retry_after, int | float):
                    delay = min(max(delay, float(retry_after)), backoff_max_s)
                row.next_attempt_at = now + timedelta(seconds=delay)
            else:
                row.state = WebhookState.FAILED.value
            session.add(row)
            session.commit()
            task_id, state = row.task_id, row.state
        self._mirror_webhook(task_id, state, attempt)
        return self.webhook_delivery_by_id(delivery_id)

    def webhook_delivery_by_id(self, delivery_id: str) -> WebhookDelivery | None:
        with self._read() as session:
            return session.get(WebhookDelivery, delivery_id)

    def _mirror_webhook(self, task_id: str, state: str, attempt: Mapping[str, Any] | None) -> None:
        with self._write() as session:
            task = session.get(Task, task_id, with_for_update=True)
            if task is None:
                return
            if attempt is not None:
                task.webhook_attempts = [*task.webhook_attempts, dict(attempt)]
            task.webhook_status = state
            task.updated_at = self.clock()
            session.add(task)
            session.commit()

    # --- retention -------------------------------------------------------------------

    def purge_expired(self, default_days: float, limit: int = 500) -> builtins.list[Task]:
        """Delete finished tasks older than their tenant's retention (or ``default_days``).

        Returns the deleted rows, so the caller removes their audio blobs and
        cached results. Finished webhook deliveries of the same age go too.
        """
        now = self.clock()
        with self._read() as session:
            shortest = session.exec(select(sa.func.min(Tenant.retention_days))).one()
        floor = min(default_days, shortest) if shortest is not None else default_days
        days = sa.func.coalesce(Tenant.retention_days, default_days)
        query = (
            select(Task, days)
            .join(Tenant, col(Tenant.id) == col(Task.tenant_id))
            .where(
                col(Task.status).in_(_TERMINAL),
                col(Task.finished_at) <= now - timedelta(days=float(floor)),
            )
            .order_by(col(Task.finished_at))
            .limit(limit * 4)
        )
        expired: builtins.list[Task] = []
        with self._read() as session:
            for task, keep_days in session.exec(query).all():
                if task.finished_at <= now - timedelta(days=float(keep_days)):
                    expired.append(task)
                if len(expired) >= limit:
                    break
        if expired:
            ids = [t.id for t in expired]
            with self._write() as session:
                session.execute(
                    sa.delete(Task)
                    .execution_options(synchronize_session=False)
                    .where(col(Task.id).in_(ids))
                )
                session.execute(
                    sa.delete(WebhookDelivery)
                    .execution_options(synchronize_session=False)
                    .where(
                        col(WebhookDelivery.task_id).in_(ids),
                        col(WebhookDelivery.state) != WebhookState.PENDING.value,
                    )
                )
                session.commit()
        return expired

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
