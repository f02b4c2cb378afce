"""Every response is private: no-store, nosniff, no referrer (issue 26).

The real app (create_app) on a real SQLite door; no Ray, since no route here calls a
model. Refusals made by the request guard before any route runs carry them too.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry


async def models_unreachable() -> dict:
    """Stands in for Pipeline.ready(): no deployments in this test."""
    raise ConnectionError("no Serve application here")


@pytest.fixture
def client(tmp_path):
    from app.api.main import create_app
    from app.tasks.pipeline import Pipeline

    settings = Settings(data_dir=tmp_path / "data", redis_url=None, auth="on")
    door = TaskDoor.from_settings(settings, ModelRegistry(models_unreachable))
    api = create_app(Pipeline(None, None), door)
    with TestClient(api, base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 503),
        ("GET", "/console", 200),
        ("GET", "/console/config.json", 200),
        ("GET", "/v1/tasks", 401),  # refused by the guard, before any route
        ("GET", "/v1/webhook-secret", 401),
        ("GET", "/no/such/route", 404),
        ("GET", "/openapi.json", 200),
    ],
)
def test_every_response_is_private(client, method, path, status):
    resp = client.request(method, path)
    assert resp.status_code == status, resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"
    # One value each, not appended beside a route's own.
    assert resp.headers.get_list("cache-control") == ["no-store"]


def test_keys_on_means_keys_for_the_planner_too(tmp_path):
    from app.api.main import create_app
    from app.storage.sql.keys import create_key
    from app.tasks.pipeline import Pipeline

    def app_with(**extra):
        settings = Settings(data_dir=tmp_path / "data", redis_url=None, auth="on", **extra)
        door = TaskDoor.from_settings(settings, ModelRegistry(models_unreachable))
        return door, create_app(Pipeline(None, None), door)

    door, api = app_with()
    plaintext, _ = create_key(door.services.engine, "acme")
    with TestClient(api, base_url="http://127.0.0.1:8000") as c:
        assert c.post("/v1/plan", json={}).status_code == 401
        assert c.get("/v1/plan/options").status_code == 401
        keyed = c.get("/v1/plan/options", headers={"Authorization": f"Bearer {plaintext}"})
        assert keyed.status_code == 200 and keyed.json()["gpus"]
        assert c.get("/planner").status_code == 200  # the page holds no data
    _, opened = app_with(open_routes=["/v1/plan"])
    with TestClient(opened, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/v1/plan/options").status_code == 200
        assert c.get("/v1/tasks").status_code == 401  # only what was opened
