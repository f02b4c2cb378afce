"""The webhook outbox: one delivery row per finished task and event, sent under a lease.

Rows are enqueued idempotently when a task ends, leased to one sender at a time,
and each attempt is recorded with exponential backoff and mirrored on the task.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.storage.sql.models import Task, WebhookDelivery, WebhookState
from app.storage.sql.task_base import _TERMINAL, TaskStoreBase


class WebhookOutbox(TaskStoreBase):
    """Enqueue, claim and record webhook deliveries."""

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


__all__ = ["WebhookOutbox"]
