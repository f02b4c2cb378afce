"""search: transcript_search (FTS5 on SQLite, tsvector + GIN on PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Hand-written: autogenerate cannot express FTS5 or generated tsvector columns, so
the table lives outside the SQLModel metadata (``search.include_name`` keeps
autogenerate away from it). Existing succeeded tasks are indexed on upgrade.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "transcript_search"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            f"CREATE VIRTUAL TABLE {TABLE} USING fts5("
            "text, task_id UNINDEXED, tenant_id UNINDEXED, segment UNINDEXED, "
            'start UNINDEXED, "end" UNINDEXED, '
            "tokenize = 'unicode61 remove_diacritics 2')"
        )
        # Virtual tables have no foreign keys: a trigger drops a deleted task's rows.
        op.execute(
            f"CREATE TRIGGER {TABLE}_task_deleted AFTER DELETE ON task BEGIN "
            f"DELETE FROM {TABLE} WHERE task_id = old.id; END"
        )
    else:
        op.execute(
            f"CREATE TABLE {TABLE} ("
            "task_id VARCHAR(26) NOT NULL REFERENCES task(id) ON DELETE CASCADE, "
            "tenant_id VARCHAR(26) NOT NULL, "
            "segment INTEGER NOT NULL, "
            "start DOUBLE PRECISION NOT NULL, "
            '"end" DOUBLE PRECISION NOT NULL, '
            "text TEXT NOT NULL, "
            "tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED, "
            "PRIMARY KEY (task_id, segment))"
        )
        op.execute(f"CREATE INDEX ix_{TABLE}_tsv ON {TABLE} USING GIN (tsv)")
        op.execute(f"CREATE INDEX ix_{TABLE}_tenant_id ON {TABLE} (tenant_id)")
    _backfill(bind)


def _backfill(bind: sa.Connection) -> None:
    from app.storage.sql.models import Task
    from app.storage.sql.search import _write

    task = sa.table(
        "task",
        sa.column("id", sa.String),
        sa.column("tenant_id", sa.String),
        sa.column("status", sa.String),
        sa.column("result", sa.JSON),
    )
    rows = bind.execute(
        sa.select(task.c.id, task.c.tenant_id, task.c.status, task.c.result).where(
            task.c.status == "succeeded"
        )
    ).all()
    for row in rows:
        _write(bind, Task(id=row.id, tenant_id=row.tenant_id, status=row.status, result=row.result))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_task_deleted")
    op.execute(f"DROP TABLE IF EXISTS {TABLE}")
