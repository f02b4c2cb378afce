"""The same service, switched to PostgreSQL in place: the task lifecycle and a burst on it.

`aipp serve --update` with AIPP_DATABASE_URL changes the replicas' environment, so
Serve rolls every replica; the Ingress replicas migrate the new database on start.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATA, JFK_PHRASE, make_key
from tests.test_tasks_api import count_tasks, normalize, submit, wait_done

pytestmark = pytest.mark.serve

REPO = Path(__file__).resolve().parent.parent
AIPP = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "aipp"


def redeploy(service, **env) -> None:
    proc = subprocess.run(
        [str(AIPP), "serve", "--update"],
        env={**service.env, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def pg_client(service, postgres_server_url):
    from tests.servers import create_database

    url = create_database(postgres_server_url)
    redeploy(service, AIPP_DATABASE_URL=url)
    key = make_key(service, "pg-tests", database_url=url)
    with httpx.Client(
        base_url=service.url, timeout=600, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        yield client
    sqlite = f"sqlite:///{service.data_dir / 'aipp.db'}"
    redeploy(service, AIPP_DATABASE_URL=sqlite)


def test_lifecycle_on_postgres(pg_client):
    created = submit(
        pg_client,
        (DATA / "jfk.flac").read_bytes(),
        "jfk.flac",
        instruction="postgres run",
        summarize="false",  # the database is the subject; the LLM would only add time
    )
    assert created.status_code == 202, created.text
    task = wait_done(pg_client, created.json()["id"])
    assert task["status"] == "succeeded"
    assert JFK_PHRASE in normalize(task["result"]["transcript"]["text"])
    listed = pg_client.get("/v1/tasks", params={"limit": 1}).json()["data"]
    assert listed[0]["id"] == task["id"]
    srt = pg_client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": "srt"})
    assert srt.status_code == 200 and " --> " in srt.text
    assert pg_client.delete(f"/v1/tasks/{task['id']}").status_code == 204
    assert pg_client.get(f"/v1/tasks/{task['id']}").status_code == 404


def test_burst_on_postgres_loses_nothing(pg_client):
    clip = (DATA / "hotwords.mp3").read_bytes()
    with cf.ThreadPoolExecutor(10) as pool:
        responses = list(
            pool.map(lambda i: submit(pg_client, clip, f"pg-{i}.mp3", summarize="false"), range(20))
        )
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 20
    assert {wait_done(pg_client, i)["status"] for i in ids} == {"succeeded"}
    assert count_tasks(pg_client) == 20


def test_sqlite_database_is_not_touched(service):
    import sqlite3

    con = sqlite3.connect(service.data_dir / "aipp.db")
    try:
        names = [r[0] for r in con.execute("select audio_filename from task")]
    finally:
        con.close()
    assert not any(n and n.startswith("pg-") for n in names)
