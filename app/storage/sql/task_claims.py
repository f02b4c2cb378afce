"""The queue protocol: claim with a lease, renew, move through stages, finish, cancel.

Every worker step is a conditional update on ``lease_owner = worker_id AND
lease_expires_at > now``; a lost lease raises :class:`LeaseLost`, a pending
cancel :class:`TaskCancelled` (see :mod:`app.storage.sql.tasks` for the rules).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.storage.sql import search
from app.storage.sql.models import (
    RUNNING_STATUSES,
    Task,
    TaskStatus,
    WebhookDelivery,
    WebhookState,
)
from app.storage.sql.task_base import (
    _RUNNING,
    _STAGE_ORDER,
    _STAGE_TIMESTAMP,
    _WORKER_FIELDS,
    InvalidTransition,
    LeaseLost,
    TaskCancelled,
    TaskNotFound,
    TaskStoreBase,
    _aware,
    _update,
)


class TaskClaims(TaskStoreBase):
    """Claims, leases and transitions of the durable queue."""

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


__all__ = ["TaskClaims"]
