"""tasks: webhook outbox, unique idempotency keys, retention

Revision ID: 0002
Revises: 0001_initial
Create Date: 2026-12-02

- ``webhook_delivery``: the durable webhook outbox (one row per task id + status).
- ``task.idempotency_fingerprint`` and a *unique* ``(tenant_id, idempotency_key)``
  index, so the Idempotency-Key contract holds with Redis down. Older duplicate
  keys (allowed before) keep only the newest task's key.
- ``tenant.retention_days`` and ``ix_task_finished_at`` for the purge job.

``tests/test_state_tasks.py::test_migrations_match_models_and_are_reversible``
checks the result against :mod:`app.storage.sql.models`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.String(length=26), primary_key=True),
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("msg_id", sa.String(length=80), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        _ts("lease_expires_at"),
        sa.Column("history", _json(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.UniqueConstraint("task_id", "event", name="uq_webhook_delivery_task_id_event"),
    )
    op.create_index(
        "ix_webhook_delivery_state_next_attempt_at",
        "webhook_delivery",
        ["state", "next_attempt_at"],
    )
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("idempotency_fingerprint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("retention_days", sa.Float(), nullable=True))
    # Keys were not unique before: keep each (tenant, key) on its newest task only.
    op.execute(
        """
        UPDATE task SET idempotency_key = NULL
        WHERE idempotency_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM task AS newer
            WHERE newer.tenant_id = task.tenant_id
              AND newer.idempotency_key = task.idempotency_key
              AND (newer.created_at > task.created_at
                   OR (newer.created_at = task.created_at AND newer.id > task.id))
        )
        """
    )
    op.drop_index("ix_task_tenant_id_idempotency_key", table_name="task")
    op.create_index(
        "ix_task_tenant_id_idempotency_key",
        "task",
        ["tenant_id", "idempotency_key"],
        unique=True,
    )
    op.create_index("ix_task_finished_at", "task", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_task_finished_at", table_name="task")
    op.drop_index("ix_task_tenant_id_idempotency_key", table_name="task")
    op.create_index("ix_task_tenant_id_idempotency_key", "task", ["tenant_id", "idempotency_key"])
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("retention_days")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("idempotency_fingerprint")
    op.drop_index("ix_webhook_delivery_state_next_attempt_at", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
