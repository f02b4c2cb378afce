"""Diarization through the running service (`aipp serve`, real models, real Redis/SQLite).

POST /v1/tasks diarize=true on the two-speaker phone call: Transcriber and Diarizer run
in parallel, the transcript comes back with speakers[] and a speaker on every segment;
PATCH /v1/tasks/{id}/speakers renames them and every format shows the names; the
OpenAI route answers response_format=diarized_json with OpenAI's shape.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import DATA, make_key

pytestmark = [pytest.mark.serve, pytest.mark.slow]

PHONE = (DATA / "phone_call.flac").read_bytes()
STEREO = (DATA / "stereo_diarization.wav").read_bytes()


@pytest.fixture
def client(service):
    key = make_key(service, f"diar-{time.monotonic_ns()}")
    with httpx.Client(
        base_url=service.url, timeout=600, headers={"Authorization": f"Bearer {key}"}
    ) as c:
        yield c


def _done(client: httpx.Client, task_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/tasks/{task_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish")


def test_diarized_task_then_rename(client: httpx.Client) -> None:
    r = client.post(
        "/v1/tasks",
        files={"file": ("call.flac", PHONE)},
        data={"diarize": "true", "max_speakers": "2"},
    )
    assert r.status_code == 202, r.text
    task = _done(client, r.json()["id"])
    assert task["status"] == "succeeded", task
    result = task["result"]
    transcript = result["transcript"]
    assert [s["id"] for s in transcript["speakers"]] == ["speaker_1", "speaker_2"]
    assert {s["speaker"] for s in transcript["segments"]} == {"speaker_1", "speaker_2"}
    assert result["models"]["diarizer"] and result["timings"]["diarize_s"] > 0
    vtt = client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": "vtt"}).text
    assert "<v Speaker 1>" in vtt and "<v Speaker 2>" in vtt

    r = client.patch(
        f"/v1/tasks/{task['id']}/speakers", json={"names": {"speaker_1": "Ann", "speaker_2": "Bo"}}
    )
    assert r.status_code == 200, r.text
    speakers = r.json()["result"]["transcript"]["speakers"]
    assert [(s["id"], s["name"]) for s in speakers] == [("speaker_1", "Ann"), ("speaker_2", "Bo")]
    vtt = client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": "vtt"}).text
    assert "<v Ann>" in vtt and "<v Bo>" in vtt and "Speaker 1" not in vtt
    txt = client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": "txt"}).text
    assert txt.startswith(("Ann: ", "Bo: "))
    srt = client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": "srt"}).text
    assert "[Ann] " in srt

    bad = client.patch(f"/v1/tasks/{task['id']}/speakers", json={"names": {"speaker_7": "X"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_speaker"


def test_rename_needs_a_diarized_task_and_valid_bounds(client: httpx.Client) -> None:
    r = client.post("/v1/tasks", files={"file": ("s.wav", STEREO)}, data={"summarize": "false"})
    task = _done(client, r.json()["id"])
    r = client.patch(f"/v1/tasks/{task['id']}/speakers", json={"names": {"speaker_1": "A"}})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_diarized"
    r = client.post(
        "/v1/tasks",
        files={"file": ("s.wav", STEREO)},
        data={"diarize": "true", "min_speakers": "3", "max_speakers": "2"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_openai_diarized_json_on_stereo_channels(client: httpx.Client) -> None:
    r = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("s.wav", STEREO)},
        data={"model": "whisper-1", "response_format": "diarized_json"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "transcribe" and body["usage"]["type"] == "duration"
    assert body["segments"] and all(
        s["type"] == "transcript.text.segment" and s["speaker"] in ("A", "B")
        for s in body["segments"]
    )
    assert body["segments"][0]["id"] == "seg_000"
