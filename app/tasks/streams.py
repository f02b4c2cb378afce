"""Caps on long-lived connections: live event streams per tenant and per replica.

An event stream holds a request slot of the Ingress for as long as its task runs.
Without a cap one tenant could hold them all; with one, the tenant past its share
gets a clear 429 at once instead of everyone else getting a stalled service. The
counts are this replica's (the Ingress scales out on ongoing requests, and each
replica protects its own slots). Live audio sessions will take slots here too.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


class TooManyStreams(Exception):
    def __init__(self, message: str, *, per_tenant: bool) -> None:
        super().__init__(message)
        self.message = message
        self.per_tenant = per_tenant


@dataclass
class StreamSlot:
    """One held slot; :meth:`release` may be called any number of times."""

    slots: StreamSlots
    tenant_id: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots._release(self.tenant_id)


class StreamSlots:
    def __init__(self, per_tenant: int, total: int) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, tenant_id: str) -> StreamSlot:
        """A slot for one more stream of ``tenant_id`` (raises :class:`TooManyStreams`)."""
        with self._lock:
            if sum(self._open.values()) >= self.total:
                raise TooManyStreams(
                    f"this server holds {self.total} live streams already; retry shortly",
                    per_tenant=False,
                )
            if self._open[tenant_id] >= self.per_tenant:
                raise TooManyStreams(
                    f"at most {self.per_tenant} live streams per tenant; close one first",
                    per_tenant=True,
                )
            self._open[tenant_id] += 1
        return StreamSlot(self, tenant_id)

    def open_for(self, tenant_id: str) -> int:
        return self._open[tenant_id]

    def _release(self, tenant_id: str) -> None:
        with self._lock:
            self._open[tenant_id] -= 1
            if self._open[tenant_id] <= 0:
                del self._open[tenant_id]


__all__ = ["StreamSlot", "StreamSlots", "TooManyStreams"]
