"""SQLAlchemy engines for SQLite (single host) and PostgreSQL (cluster).

SQLite is tuned for many threads and a few processes on one host: WAL (readers
never block the writer), a busy timeout (writers queue instead of failing) and
explicit ``BEGIN`` control so that a write transaction can take the write lock
up front (``BEGIN IMMEDIATE``, see :func:`writer`). Without that, a transaction
that reads first and writes later can fail at once with ``database is locked``
when another connection committed in between, whatever the busy timeout.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_OPTION = "aipp_sqlite_begin"


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def normalize_url(url: str) -> sa.URL:
    """Parse ``url``; ``postgres://`` and ``postgresql://`` mean psycopg 3 (psycopg2 is not
    a dependency)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    sa_url = make_url(url)
    if sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    return sa_url


def make_engine(url: str, *, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings each backend needs.

    - SQLite: ``check_same_thread=False`` (the pool hands connections across
      threads), WAL, ``busy_timeout``, foreign keys on, ``synchronous=NORMAL``
      (durable across process crashes in WAL mode); a file database and its
      directory are created private (0600/0700: it holds webhook secrets; SQLite
      gives ``-wal`` and ``-shm`` the database's mode). ``sqlite://`` (in memory)
      shares one connection.
    - PostgreSQL (``postgresql+psycopg://``): ``pool_pre_ping`` so a restarted
      server or a dropped idle connection costs a reconnect, not an error.
      ``postgresql://`` and ``postgres://`` URLs are taken as psycopg 3.

    Extra ``kwargs`` go to :func:`sqlalchemy.create_engine`.
    """
    sa_url = normalize_url(url)
    if sa_url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(sa_url, echo=echo, **kwargs)

    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    database = sa_url.database
    in_memory = not database or database == ":memory:" or database.startswith("file::memory:")
    if in_memory:
        kwargs.setdefault("poolclass", StaticPool)
    elif not database.startswith("file:"):
        _create_private(Path(database).expanduser())
    engine = sa.create_engine(sa_url, echo=echo, connect_args=connect_args, **kwargs)
    _install_sqlite_hooks(engine, wal=not in_memory)
    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 (directory 0700) before SQLite does, whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):  # read-only or not ours: SQLite reports it better
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))


def writer(engine: Engine) -> Engine:
    """The engine to bind write transactions to.

    On SQLite its transactions start with ``BEGIN IMMEDIATE`` (take the write
    lock now, waiting up to the busy timeout); elsewhere it is ``engine``.
    """
    if not is_sqlite(engine):
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _install_sqlite_hooks(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


__all__ = ["is_sqlite", "make_engine", "normalize_url", "writer"]
