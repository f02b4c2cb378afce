"""Session-wide real servers: one Ray head, one `aipp serve` on it (plus PostgreSQL and Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.cluster_fixtures", "tests.fixtures_state"]

DATA = Path(__file__).resolve().parent / "data"
JFK_PHRASE = "ask not what your country can do for you"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def service(ray_cluster, tmp_path_factory):
    """The Serve app as a user runs it: `aipp serve`, joined to the session's Ray head."""
    from tests.cluster_fixtures import start_service, stop_service

    root = tmp_path_factory.mktemp("service")
    env = {"AIPP_MAX_UPLOAD_MB": "8"}
    svc, proc = start_service(ray_cluster, root / "data", env, root / "serve.log")
    yield svc
    stop_service(proc)
