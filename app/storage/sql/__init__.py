"""Durable state in SQL: tenants, API keys and tasks (issue #3).

The database is the source of truth for every accepted task; Redis only holds
derived, expendable state (cache, idempotency, rate limits, events).

- :mod:`app.storage.sql.models` - the sqlmodel tables.
- :mod:`app.storage.sql.engine` - :func:`make_engine` for SQLite and PostgreSQL.
- :mod:`app.storage.sql.migrate` - :func:`upgrade` runs the Alembic migrations at start-up.
- :mod:`app.storage.sql.tasks` - :class:`TaskStore`, the task queue and lifecycle, made of
  :mod:`~app.storage.sql.task_claims` (claims, leases, transitions),
  :mod:`~app.storage.sql.task_queries` (reads, pages, purge) and
  :mod:`~app.storage.sql.webhook_outbox` (the durable webhook outbox), over
  :mod:`~app.storage.sql.task_base`.
- :mod:`app.storage.sql.keys` - tenants and hashed API keys.
"""
