"""Reading and housekeeping of task rows, outside the queue protocol.

Pages with opaque cursors, counts (the autoscaling signal), the durable
idempotency lookup, result swaps, deletion and the retention purge.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.storage.sql.models import Task, TaskStatus, Tenant, WebhookDelivery, WebhookState
from app.storage.sql.task_base import _TERMINAL, DEFAULT_LIMIT, MAX_LIMIT, TaskStoreBase


class BadCursor(ValueError):
    """A pagination cursor that this store did not produce (answer 400/422)."""


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), task_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


#: Longer than any cursor :func:`encode_cursor` makes (about 90 characters): decoding
#: stays bounded whatever a client sends.
MAX_CURSOR_LENGTH = 200
_CURSOR_ID = re.compile(r"[0-9A-Za-z]{1,26}", re.ASCII)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor points after; :class:`BadCursor` for anything else.

    Total: a long or deeply nested value (RecursionError), a date that leaves years
    1..9999 once its offset is applied (OverflowError) or an id that is not one of ours
    (a NUL byte that PostgreSQL would refuse) is a bad cursor, never a 500.
    """
    if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise BadCursor("invalid cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(decoded, list) or len(decoded) != 2:
            raise ValueError("not a [created_at, id] pair")
        created, task_id = decoded
        if not isinstance(created, str) or not isinstance(task_id, str):
            raise ValueError("not a [created_at, id] pair")
        if _CURSOR_ID.fullmatch(task_id) is None:
            raise ValueError("not a task id")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("incomplete cursor")
        return when.astimezone(UTC), task_id
    except (
        ValueError,
        TypeError,
        UnicodeError,
        binascii.Error,
        OverflowError,
        RecursionError,
    ) as exc:
        raise BadCursor("invalid cursor") from exc


class TaskQueries(TaskStoreBase):
    """Task reads, pages and counts; deletion and retention."""

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

    def set_audio_uri(self, task_id: str, uri: str) -> bool:
        """Point a task at other stored audio (its redacted copy); ``False`` if it is gone."""
        with self._write() as session:
            task = session.get(Task, task_id)
            if task is None:
                return False
            task.audio_uri = uri
            session.add(task)
            session.commit()
            return True

    def audio_uri_in_use(self, uri: str, except_id: str | None = None) -> bool:
        """Whether any task (but ``except_id``) points at this stored audio (by URI, not
        by content)."""
        with self._read() as session:
            query = select(Task.id).where(Task.audio_uri == uri)
            if except_id is not None:
                query = query.where(Task.id != except_id)
            return session.exec(query.limit(1)).first() is not None

    def audio_in_use(self, audio_sha256: str, tenant_id: str | None = None) -> bool:
        """Whether any task (of ``tenant_id``, when given) still references the audio."""
        query = select(Task.id).where(Task.audio_sha256 == audio_sha256)
        if tenant_id is not None:
            query = query.where(Task.tenant_id == tenant_id)
        with self._read() as session:
            return session.exec(query.limit(1)).first() is not None

    # --- retention -------------------------------------------------------------------

    def purge_expired(self, default_days: float, limit: int = 500) -> builtins.list[Task]:
        """Delete up to ``limit`` finished tasks older than their tenant's retention (or
        ``default_days``), tenant by tenant, oldest first.

        Each tenant is asked with its own cut-off, so a tenant with a long retention and
        many old tasks can never hide a short-retention tenant's expired ones (one global
        "oldest first" page could). Every tenant gets a fair share of ``limit``; call
        again while a full batch comes back. Returns the deleted rows, so the caller
        removes their audio blobs and cached results. Finished webhook deliveries of the
        same tasks go too.
        """
        now = self.clock()
        with self._read() as session:
            tenants = session.exec(
                select(Tenant.id, Tenant.retention_days).order_by(col(Tenant.id))
            ).all()
        share = max(1, limit // max(1, len(tenants)))
        expired: builtins.list[Task] = []
        with self._read() as session:
            for tenant_id, retention_days in tenants:
                room = min(share, limit - len(expired))
                if room <= 0:
                    break
                days = default_days if retention_days is None else retention_days
                query = (
                    select(Task)
                    .where(
                        col(Task.tenant_id) == tenant_id,
                        col(Task.status).in_(_TERMINAL),
                        col(Task.finished_at) <= now - timedelta(days=float(days)),
                    )
                    .order_by(col(Task.finished_at))
                    .limit(room)
                )
                expired.extend(session.exec(query).all())
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


__all__ = ["BadCursor", "TaskQueries", "decode_cursor", "encode_cursor"]
