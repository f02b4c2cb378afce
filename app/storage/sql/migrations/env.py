"""Alembic environment, driven from :mod:`app.storage.sql.migrate` (there is no alembic.ini).

The caller puts an open SQLAlchemy connection in ``config.attributes["connection"]``;
offline (``--sql``) mode uses ``config.attributes["url"]``.
"""

from __future__ import annotations

from alembic import context

from app.storage.sql import search
from app.storage.sql.models import SQLModel

config = context.config
target_metadata = SQLModel.metadata


def _common(dialect_name: str) -> dict:
    return {
        "target_metadata": target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        # The search table is hand-made (FTS5 / tsvector), outside the SQLModel metadata.
        "include_name": search.include_name,
    }


def run_migrations_offline() -> None:
    url = config.attributes["url"]
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_common(url.split(":", 1)[0].split("+", 1)[0]),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(connection=connection, **_common(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
