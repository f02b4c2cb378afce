"""The durable webhook outbox sender: any live runner replica delivers due messages.

A terminal task writes one ``webhook_delivery`` row per status
(:meth:`TaskStore.enqueue_webhook`). This loop leases due rows (so two
replicas never send the same attempt), makes one signed attempt each, and
stores the outcome: delivered, failed for good, or due again after an
exponential backoff (or the receiver's ``Retry-After``). The ``webhook-id`` is
the row's ``msg_id``, the same on every attempt and replica, so a receiver that
dedupes on it sees each (task id, status) exactly once. A restart loses
nothing: the rows wait in the database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from app.core import metrics
from app.storage.clients import Services
from app.storage.sql import keys
from app.storage.sql.models import WebhookDelivery, WebhookState
from app.tasks.waiting import sleep_until_due
from app.tasks.webhooks import send_once

logger = logging.getLogger("ray.serve")


class WebhookSender:
    def __init__(self, services: Services, worker_id: str) -> None:
        self.services = services
        self.settings = services.settings
        self.worker_id = worker_id
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                self._wake.clear()
                sent = await self.send_due()
                if sent:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("webhook outbox error; retrying")
            await self._idle_wait()

    async def _idle_wait(self) -> None:
        await sleep_until_due(self.services.store, self._wake, self.settings.worker_poll_s)

    async def send_due(self, limit: int = 10) -> int:
        """Send every due message once; returns how many were attempted."""
        lease_s = self.settings.webhook_timeout_s * 2 + 5
        rows = await asyncio.to_thread(
            self.services.store.claim_webhooks, self.worker_id, lease_s, limit
        )
        if rows:
            await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows)

    async def _send(self, row: WebhookDelivery) -> None:
        store = self.services.store
        tenant = await asyncio.to_thread(keys.get_tenant, self.services.engine, row.tenant_id)
        if tenant is None:  # tenant removed: nobody can verify the signature any more
            attempt = {
                "attempt": row.attempts + 1,
                "at": datetime.now(UTC).isoformat(),
                "status_code": None,
                "error": "tenant_not_found",
                "ok": False,
            }
            await asyncio.to_thread(
                store.record_webhook_attempt,
                row.id,
                self.worker_id,
                attempt,
                ok=False,
                retryable=False,
                backoff_s=self.settings.webhook_backoff_s,
            )
            return
        result = await send_once(
            row.url,
            row.payload,
            tenant.webhook_secret,
            msg_id=row.msg_id,
            attempt=row.attempts + 1,
            timeout_s=self.settings.webhook_timeout_s,
            allow=self.settings.url_allow,
        )
        updated = await asyncio.to_thread(
            store.record_webhook_attempt,
            row.id,
            self.worker_id,
            result.to_dict(),
            ok=result.ok,
            retryable=result.retryable,
            backoff_s=self.settings.webhook_backoff_s,
        )
        if updated is not None and updated.state == WebhookState.FAILED.value:
            metrics.record_webhook_failure()
            logger.warning("webhook %s for %s failed for good", row.msg_id, row.task_id)


__all__ = ["WebhookSender"]
