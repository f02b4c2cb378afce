"""SQL tables for tenants, API keys and durable tasks.

Portable across SQLite and PostgreSQL: statuses are plain strings (no native
enums, so adding a status needs no migration of a type), JSON columns become
JSONB on PostgreSQL, and every timestamp is stored in UTC and read back as an
aware ``datetime`` (:class:`UTCDateTime`), whatever the backend.

The first migration (``migrations/versions/0001_initial.py``) creates exactly
these tables; ``tests/test_state_tasks.py`` checks that they do not drift.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# The task vocabulary lives in core (every layer speaks it); the tables use it.
from app.core.task_vocabulary import (
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    TaskSource,
    TaskStatus,
    WebhookState,
)

# --- Column types -----------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC-aware in Python.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is
    stored as naive UTC (a fixed-width string that sorts correctly) and marked
    UTC again on the way out. Naive inputs are refused: they are always a bug.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; use an aware one")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON everywhere, JSONB on PostgreSQL (indexable, compact).
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- Identifiers --------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_ulid_last: tuple[int, int] = (0, 0)


def new_id() -> str:
    """A ULID: 26 Crockford base32 characters, 48-bit milliseconds + 80 random bits.

    IDs sort by creation time (lexically and as strings in SQL), which keeps
    B-tree inserts append-mostly and makes ``id`` a stable tie-breaker for
    ``created_at``. Within one process and millisecond the random part is
    incremented, so IDs from one process are strictly increasing.
    """
    global _ulid_last
    with _ulid_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _ulid_last
        if ms <= last_ms:
            ms = last_ms
            rand = last_rand + 1
            if rand >= 1 << 80:  # 2**80 IDs in one millisecond: move to the next one
                ms, rand = ms + 1, int.from_bytes(os.urandom(10), "big") >> 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _ulid_last = (ms, rand)
    value = (ms << 80) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


# --- Tables -------------------------------------------------------------------


class Tenant(SQLModel, table=True):
    """Who owns tasks and keys. ``webhook_secret`` signs this tenant's webhooks."""

    __tablename__ = "tenant"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    name: str = Field(max_length=100, unique=True)
    # ``whsec_`` + base64 (Standard Webhooks); kept in clear because we sign with it.
    webhook_secret: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Days finished tasks, their audio and cached results are kept; None = the
    # service default (AIPP_RETENTION_DAYS).
    retention_days: float | None = None


class ApiKey(SQLModel, table=True):
    """An API key. Only the SHA-256 of the key is stored; ``prefix`` identifies it to humans."""

    __tablename__ = "api_key"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=26)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Task(SQLModel, table=True):
    """One accepted unit of work and, once finished, its result.

    Lifecycle: ``queued -> transcribing -> summarizing -> succeeded | failed |
    cancelled``; see :class:`app.storage.sql.tasks.TaskStore` for the rules. The lease
    columns make a worker's claim exclusive and let another worker take over
    when the first one dies.
    """

    __tablename__ = "task"
    __table_args__ = (
        sa.Index("ix_task_status_created_at", "status", "created_at"),
        sa.Index("ix_task_tenant_id_created_at", "tenant_id", "created_at"),
        # Unique: the idempotency contract holds in the database even without Redis.
        sa.Index("ix_task_tenant_id_idempotency_key", "tenant_id", "idempotency_key", unique=True),
        sa.Index("ix_task_finished_at", "finished_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=26)
    status: str = Field(default=TaskStatus.QUEUED.value, max_length=16)
    source: str = Field(default=TaskSource.API.value, max_length=16)

    # Input.
    audio_sha256: str | None = Field(default=None, max_length=64)
    audio_uri: str | None = Field(default=None, max_length=2048)
    audio_filename: str | None = Field(default=None, max_length=512)
    audio_url: str | None = Field(default=None, max_length=2048)
    duration_s: float | None = None
    # Per-task knobs, e.g. ``{"language": "en", "summary_instruction": "..."}``.
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    webhook_url: str | None = Field(default=None, max_length=2048)
    idempotency_key: str | None = Field(default=None, max_length=255)
    # What the key was used with (see app.storage.redis.idempotency.fingerprint).
    idempotency_fingerprint: str | None = Field(default=None, max_length=64)

    # Scheduling.
    attempts: int = 0
    max_attempts: int = 3
    not_before: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancel_requested: bool = False

    # Timestamps.
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    queued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    transcribing_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    summarizing_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # Outcome.
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    error_code: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, sa_type=sa.Text)
    cached: bool = False

    # Webhook delivery: the attempts as dicts (see app.tasks.webhooks.Attempt.to_dict)
    # and the overall state: None (none sent), "delivered" or "failed".
    webhook_attempts: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    webhook_status: str | None = Field(default=None, max_length=16)

    @property
    def status_enum(self) -> TaskStatus:
        return TaskStatus(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.status_enum.terminal


class WebhookDelivery(SQLModel, table=True):
    """One webhook message (task id + terminal status) and its delivery attempts.

    The outbox row is written when the task ends, so a restart or a downscale
    loses nothing: any live runner replica claims due rows with a short lease
    and retries them with backoff. ``(task_id, event)`` is unique, so each
    terminal status is one message with one ``webhook-id`` however often it is
    scheduled. No foreign key: the message outlives a deleted task.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.UniqueConstraint("task_id", "event", name="uq_webhook_delivery_task_id_event"),
        sa.Index("ix_webhook_delivery_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    task_id: str = Field(max_length=26)
    tenant_id: str = Field(max_length=26)
    event: str = Field(max_length=32)  # e.g. "task.succeeded"
    msg_id: str = Field(max_length=80)
    url: str = Field(max_length=2048)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    state: str = Field(default=WebhookState.PENDING.value, max_length=16)
    attempts: int = 0
    max_attempts: int = 5
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


__all__ = [
    "RUNNING_STATUSES",
    "TERMINAL_STATUSES",
    "ApiKey",
    "JSONType",
    "Task",
    "TaskSource",
    "TaskStatus",
    "Tenant",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookState",
    "new_id",
    "utcnow",
]
