"""Kill Serve replicas mid-task with ray.kill: every accepted task still ends succeeded."""

from __future__ import annotations

import os
import time

import httpx
import pytest
import ray

from tests.conftest import DATA

pytestmark = pytest.mark.serve

LONG = (DATA / "multilingual.mp3").read_bytes()


@pytest.fixture(scope="module")
def ray_driver(ray_cluster, service):
    os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=ray_cluster.gcs_address, namespace="serve", log_to_driver=False)
    yield
    ray.shutdown()


def replica_names(deployment: str) -> list[str]:
    prefix = f"SERVE_REPLICA::aipp#{deployment}#"
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    ]


def poll(client: httpx.Client, task_id: str) -> dict | None:
    try:
        resp = client.get(f"/v1/tasks/{task_id}", timeout=10)
        return resp.json() if resp.status_code == 200 else None
    except httpx.HTTPError:
        return None  # a replica we just killed is being replaced


def wait_for(client, task_id, predicate, timeout_s=300) -> dict:
    deadline = time.monotonic() + timeout_s
    body = None
    while time.monotonic() < deadline:
        body = poll(client, task_id) or body
        if body and predicate(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"timed out; last state {body}")


@pytest.mark.parametrize("deployment", ["Transcriber", "TaskRunner"])
def test_task_survives_a_killed_replica(client, ray_driver, deployment):
    resp = client.post(
        "/v1/tasks",
        files={"file": (f"crash-{deployment}.mp3", LONG)},
        # The crash is in speech to text: its summary (1-2 min of LLM on 2 cores) adds nothing.
        data={"instruction": f"survive {deployment}", "summarize": "false"},
    )
    assert resp.status_code == 202
    task_id = resp.json()["id"]
    wait_for(client, task_id, lambda t: t["status"] == "transcribing")
    time.sleep(1.0)  # well inside the ~10 s transcription of a 60 s clip
    victims = replica_names(deployment)
    assert victims, f"no {deployment} replica found"
    for name in victims:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    final = wait_for(client, task_id, lambda t: t["status"] in {"succeeded", "failed"})
    assert final["status"] == "succeeded", final
    assert final["attempts"] >= 2  # it was claimed again after the crash
    assert "permission" in final["result"]["transcript"]["text"].lower()
    assert final["result"]["summary"]["method"] == "skipped"
    # Serve replaced the killed replica, and it serves new work.
    assert set(replica_names(deployment)).isdisjoint(victims)
