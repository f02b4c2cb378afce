"""Pytest fixtures for the state layer: real PostgreSQL, real Redis, fresh databases.

Enable with ``pytest_plugins = ["tests.fixtures_state"]`` in ``tests/conftest.py``
(or ``-p tests.fixtures_state``). Servers start lazily, once per session, only
for tests that ask for them; PostgreSQL tests are skipped where pgserver's
binaries are missing.

- ``postgres_server_url`` (session): the server's maintenance database URL.
- ``postgres_url`` (function): a fresh, empty database on it, dropped afterwards.
- ``sqlite_url`` (function): a fresh SQLite file in ``tmp_path``.
- ``database_url`` (function, parametrized ``sqlite`` / ``postgres``): either, empty.
- ``migrated_database_url`` (function, parametrized): a fresh database at the
  head revision (PostgreSQL ones are copies of a template migrated once).
- ``engine`` (function): ``make_engine(migrated_database_url)``.
- ``redis_server`` (session) / ``redis_url`` (session) / ``redis_client``
  (function, flushed before each test).
- ``fresh_redis`` (function): a private Redis server the test may stop and restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import (
    RedisHandle,
    ServerUnavailable,
    create_database,
    drop_database,
    start_postgres,
    start_redis,
)


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        url, stop = start_postgres(tmp_path_factory.mktemp("postgres"))
    except ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url)
    try:
        yield url
    finally:
        drop_database(postgres_server_url, url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'aipp.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database; the test runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> str:
    """Name of a database migrated to head, cloned by ``migrated_database_url``."""
    from app.storage.sql.migrate import upgrade

    url = create_database(postgres_server_url, name="aipp_template")
    upgrade(url)  # disposes its engine: a template must have no connections
    return "aipp_template"


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        from app.storage.sql.migrate import upgrade

        url = f"sqlite:///{tmp_path / 'aipp.db'}"
        upgrade(url)
        yield url
        return
    server = request.getfixturevalue("postgres_server_url")
    template = request.getfixturevalue("postgres_template")
    url = create_database(server, template=template)
    try:
        yield url
    finally:
        drop_database(server, url)


@pytest.fixture
def engine(migrated_database_url: str):
    """An engine on a fresh database at the head revision (SQLite and PostgreSQL)."""
    from app.storage.sql.engine import make_engine

    eng = make_engine(migrated_database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    try:
        _url, stop, handle = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:  # pragma: no cover - no binary here
        pytest.skip(f"Redis not available: {exc}")
    try:
        yield handle
    finally:
        stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisHandle) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_server: RedisHandle):
    """A client on the session's Redis, emptied first; restarts the server if a test stopped it."""
    from app.storage.redis import connect

    redis_server.start()
    client = connect(redis_server.url, socket_timeout_s=5)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_redis(tmp_path) -> Iterator[RedisHandle]:
    """A Redis server of this test alone, free to be stopped and restarted."""
    _url, stop, handle = start_redis(tmp_path)
    try:
        yield handle
    finally:
        stop()
