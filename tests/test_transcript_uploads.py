"""Summarize a transcript the user already has, through the running service (issue 22).

A real call's WebVTT export and JSON speaker turns (tests/transcript_fixtures.py), the
real LLM, the real task path: upload, queue, runner, summary, exports.
"""

from __future__ import annotations

import json

import pytest

from app.llm.grounding import normalize as plain  # lower case, no punctuation
from tests.test_tasks_api import wait_done
from tests.transcript_fixtures import to_json_turns, to_vtt_file, turns

pytestmark = pytest.mark.serve


def _grounded(result: dict) -> None:
    transcript, summary = result["transcript"], result["summary"]
    said = " " + plain(" ".join(s["text"] for s in transcript["segments"])) + " "
    assert summary["summary"].strip()
    evidence = summary["key_points_evidence"] + summary["action_items_evidence"]
    assert len(evidence) == len(summary["key_points"]) + len(summary["action_items"])
    for ev in evidence:
        assert f" {plain(ev['quote'])} " in said, ev


@pytest.mark.timeout(900)
def test_a_vtt_export_is_summarized_with_its_speakers(client, tmp_path):
    rows = turns(300)  # the first five minutes of the call: all its speakers have spoken
    vtt = to_vtt_file(rows, tmp_path / "call.vtt").read_bytes()
    resp = client.post("/v1/tasks", files={"transcript": ("call.vtt", vtt, "text/vtt")})
    assert resp.status_code == 202, resp.text
    task = wait_done(client, resp.json()["id"], timeout_s=800)
    assert task["status"] == "succeeded", task
    assert task["options"] == {"input": "transcript"}
    assert task["audio"]["filename"] == "call.vtt"
    result = task["result"]
    assert result["models"]["stt"] == "uploaded-transcript"
    transcript = result["transcript"]
    assert len(transcript["segments"]) == len(rows)
    assert {s["name"] for s in transcript["speakers"]} >= {"Chris", "Orie", "Ben"}
    _grounded(result)
    # Every export works as for audio, speakers included.
    vtt_out = client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": "vtt"}).text
    assert "<v Chris>" in vtt_out
    # And search finds its words.
    hits = client.get("/v1/search", params={"q": "workflow"}).json()["data"]
    assert any(h["task_id"] == task["id"] for h in hits)


@pytest.mark.timeout(600)
def test_json_turns_through_the_synchronous_route(client, tmp_path):
    rows = turns(180)
    data = to_json_turns(rows, tmp_path / "turns.json").read_bytes()
    resp = client.post(
        "/v1/summarize", files={"transcript": ("turns.json", data, "application/json")}
    )
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert [s["text"] for s in result["transcript"]["segments"]] == [r["text"] for r in rows]
    assert result["timings"]["transcribe_s"] == 0.0
    _grounded(result)


def test_bad_transcripts_get_a_clear_4xx(client):
    bad = client.post("/v1/tasks", files={"transcript": ("x.json", b'[{"speaker": "A"}]')})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_transcript"
    assert "text" in bad.json()["error"]["message"]
    both = client.post(
        "/v1/tasks",
        files={"transcript": ("x.txt", b"Ann: hi"), "file": ("a.wav", b"RIFF")},
    )
    assert both.status_code == 422 and both.json()["error"]["code"] == "one_input_only"
    diarized = client.post(
        "/v1/tasks", files={"transcript": ("x.txt", b"Ann: hi")}, data={"diarize": "true"}
    )
    assert diarized.json()["error"]["code"] == "diarize_needs_audio"
    empty = client.post("/v1/tasks", files={"transcript": ("x.vtt", b"WEBVTT\n\n")})
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "empty_transcript"
    assert json.loads(empty.text)["error"]["message"]
