"""The real FastAPI app without Ray, on a fresh SQLite file or PostgreSQL database.

For tests of what the API does before any model runs (decoding, fuzzing): the app
is ``create_app`` over a real task door; the models are an async function passed in,
standing in for ``Pipeline.ready()`` (the deployments' info calls over Serve).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry

BASE_URL = "http://127.0.0.1:8000"


@dataclass
class KeyedApp:
    client: TestClient
    door: TaskDoor
    key: str
    tenant_id: str


def database_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` (SQLite under the data dir) or a fresh PostgreSQL database, by the param."""
    if request.param != "postgres":
        return None
    from tests.servers import create_database

    server = request.getfixturevalue("postgres_server_url")
    template = request.getfixturevalue("postgres_template")
    return create_database(server, template=template)


@contextmanager
def keyed_app(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    models: Callable[[], Awaitable[dict]],
    *,
    tenant: str,
    models_ttl_s: float = 60.0,
    **settings: object,
) -> Iterator[KeyedApp]:
    """The app with keys on and one tenant's key, on the database the param names."""
    from app.api.main import create_app
    from app.storage.sql.keys import create_key
    from app.tasks.pipeline import Pipeline

    config = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=database_url(request),
        redis_url=None,
        auth="on",
        **settings,
    )
    door = TaskDoor.from_settings(config, ModelRegistry(models, ttl_s=models_ttl_s))
    key, _ = create_key(door.services.engine, tenant)
    tenant_id = door.tenants.authenticate_key(key)[0].id
    try:
        with TestClient(create_app(Pipeline(None, None), door), base_url=BASE_URL) as client:
            yield KeyedApp(client, door, key, tenant_id)
    finally:
        door.services.engine.dispose()
