"""initial: tenant, api_key, task

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-27

Hand-written; ``tests/test_state_tasks.py::test_migrations_match_models`` checks
that it matches :mod:`app.storage.sql.models` on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tenant",
        sa.Column("id", sa.String(length=26), primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("webhook_secret", sa.String(length=100), nullable=False),
        _ts("created_at", nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=26), primary_key=True),
        sa.Column("tenant_id", sa.String(length=26), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        _ts("created_at", nullable=False),
        _ts("revoked_at"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_api_key_tenant_id", "api_key", ["tenant_id"])
    op.create_table(
        "task",
        sa.Column("id", sa.String(length=26), primary_key=True),
        sa.Column("tenant_id", sa.String(length=26), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("audio_sha256", sa.String(length=64), nullable=True),
        sa.Column("audio_uri", sa.String(length=2048), nullable=True),
        sa.Column("audio_filename", sa.String(length=512), nullable=True),
        sa.Column("audio_url", sa.String(length=2048), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("options", _json(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        _ts("not_before"),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        _ts("lease_expires_at"),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("queued_at"),
        _ts("transcribing_at"),
        _ts("summarizing_at"),
        _ts("finished_at"),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("webhook_attempts", _json(), nullable=False),
        sa.Column("webhook_status", sa.String(length=16), nullable=True),
    )
    op.create_index("ix_task_status_created_at", "task", ["status", "created_at"])
    op.create_index("ix_task_tenant_id_created_at", "task", ["tenant_id", "created_at"])
    op.create_index("ix_task_tenant_id_idempotency_key", "task", ["tenant_id", "idempotency_key"])


def downgrade() -> None:
    op.drop_index("ix_task_tenant_id_idempotency_key", table_name="task")
    op.drop_index("ix_task_tenant_id_created_at", table_name="task")
    op.drop_index("ix_task_status_created_at", table_name="task")
    op.drop_table("task")
    op.drop_index("ix_api_key_tenant_id", table_name="api_key")
    op.drop_table("api_key")
    op.drop_table("tenant")
