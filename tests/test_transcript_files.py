"""Transcripts users already have: parsed from a real meeting's exports, bad files refused.

The WebVTT and JSON files are made from a real call's IRC log
(tests/transcript_fixtures.py); the parser is the one submissions use.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from app.core.task_vocabulary import InputKind, TaskOptions, TaskSource
from app.speech.transcript_files import (
    MAX_SEGMENTS,
    TranscriptFileError,
    detect_format,
    parse_transcript,
)
from app.tasks.sources import InputRefused, TranscriptUpload
from app.tasks.submit import SubmissionError, SubmitRequest
from tests.test_task_door import Upload, make_door
from tests.transcript_fixtures import to_json_turns, to_vtt_file, turns

TEN_MINUTES = turns(600)


def test_a_vtt_export_keeps_speakers_times_and_text(tmp_path):
    path = to_vtt_file(TEN_MINUTES, tmp_path / "call.vtt")
    data = path.read_bytes()
    assert detect_format(data, "call.vtt") == "vtt"
    transcript = parse_transcript(data, "call.vtt")
    assert len(transcript.segments) == len(TEN_MINUTES) == 23
    names = {s.name for s in transcript.speakers}
    assert names == {"Ben", "Chris", "Orie", "Russell", "TallTed", "Vivien"}
    first, last = transcript.segments[0], transcript.segments[-1]
    assert (first.start, first.text) == (0.0, "Victory appears to be ours.")
    assert last.start == pytest.approx(TEN_MINUTES[-1]["start"], abs=0.001)
    assert transcript.duration_s == pytest.approx(TEN_MINUTES[-1]["end"], abs=0.001)
    by_id = {s.id: s.name for s in transcript.speakers}
    assert by_id[first.speaker] == "TallTed"
    chris = next(s for s in transcript.segments if "CD workflow" in s.text)
    assert by_id[chris.speaker] == "Chris"


def test_json_turns_with_and_without_times(tmp_path):
    timed = parse_transcript(to_json_turns(TEN_MINUTES, tmp_path / "t.json").read_bytes())
    assert [s.start for s in timed.segments] == [r["start"] for r in TEN_MINUTES]
    untimed = parse_transcript(
        to_json_turns(TEN_MINUTES, tmp_path / "u.json", with_times=False).read_bytes()
    )
    starts = [s.start for s in untimed.segments]
    assert starts == sorted(starts) and starts[0] == 0.0 and untimed.duration_s > 60
    # An object with "segments", as other tools export it, works too.
    wrapped = json.dumps({"segments": [{"speaker": "Ann", "text": "We ship Friday."}]})
    assert parse_transcript(wrapped.encode()).speakers[0].name == "Ann"


def test_srt_and_plain_text_with_named_speakers():
    srt = (
        b"1\n00:00:01,000 --> 00:00:03,500\nAnn: We ship on Friday.\n\n"
        b"2\n00:00:04,000 --> 00:00:06,000\nBo: I will write the notes.\n"
    )
    parsed = parse_transcript(srt, "notes.srt")
    assert [(s.start, s.text) for s in parsed.segments] == [
        (1.0, "We ship on Friday."),
        (4.0, "I will write the notes."),
    ]
    assert [s.name for s in parsed.speakers] == ["Ann", "Bo"]
    text = parse_transcript(b"Ann: hello all\nBo: hi there\n\nA paragraph without a name.")
    assert [s.text for s in text.segments] == [
        "hello all",
        "hi there",
        "A paragraph without a name.",
    ]
    assert text.segments[2].speaker is None


def test_control_and_bidi_characters_never_reach_the_transcript():
    raw = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v Ann>ok\x1b[31m \u202eevil\x07 done\n"
    text = parse_transcript(raw.encode()).segments[0].text
    assert text == "ok [31m evil done"


@pytest.mark.parametrize(
    "data, code",
    [
        (b"\xff\xfe\x00bad", "transcript_not_utf8"),
        (b"WEBVTT\n\n", "empty_transcript"),
        (b"WEBVTT\n\nnot a cue at all\n", "empty_transcript"),
        (b'{"speakers": 2}', "invalid_transcript"),
        (b'[{"speaker": "Ann"}]', "invalid_transcript"),
        (b'[{"text": "hi", "start": "soon"}]', "invalid_transcript"),
        (b'[{"text": "hi", "start": 1e300}]', "invalid_transcript"),
        (b"[" * 100_000, "invalid_transcript"),
        (json.dumps([{"text": "x"}] * (MAX_SEGMENTS + 1)).encode(), "transcript_too_long"),
        (b"a" * (6 * 1024 * 1024), "transcript_too_large"),
        (b"   \n\n  ", "empty_transcript"),
    ],
)
def test_bad_transcripts_are_refused_by_name(data, code):
    with pytest.raises(TranscriptFileError) as refused:
        parse_transcript(data)
    assert refused.value.code == code and refused.value.message


def _request(tenant: str, data: bytes, name: str, **options) -> SubmitRequest:
    return SubmitRequest(
        tenant_id=tenant,
        options=TaskOptions(**options),
        source=TranscriptUpload(Upload(data, name)),
        origin=TaskSource.API,
        max_minutes=30,
    )


def test_a_transcript_becomes_a_task_without_audio(tmp_path):
    door = make_door(tmp_path)
    tenant = door.tenants.ensure("acme").id
    vtt = to_vtt_file(TEN_MINUTES, tmp_path / "call.vtt").read_bytes()

    async def scenario():
        sub = await door.submit(_request(tenant, vtt, "call.vtt", instruction="decisions"))
        task = sub.task
        assert task.options == {"input": InputKind.TRANSCRIPT.value, "instruction": "decisions"}
        assert task.audio_filename == "call.vtt"
        assert task.duration_s == pytest.approx(TEN_MINUTES[-1]["end"], abs=0.01)
        assert door.services.blobs.get(task.audio_uri) == vtt
        # Diarization needs audio; a bad file and an over-long one are refused up front.
        with pytest.raises(SubmissionError) as diarize:
            await door.submit(_request(tenant, vtt, "call.vtt", diarize=True))
        assert diarize.value.code == "diarize_needs_audio"
        with pytest.raises(TranscriptFileError):
            await door.submit(_request(tenant, b"WEBVTT\n\n", "empty.vtt"))
        whole = to_vtt_file(turns(), tmp_path / "whole.vtt").read_bytes()  # 52 minutes
        with pytest.raises(InputRefused) as long:
            await door.submit(_request(tenant, whole, "whole.vtt"))
        assert long.value.code == "transcript_too_long" and long.value.too_large
        return task

    task = asyncio.run(scenario())
    page, _ = door.list(tenant, status=None, limit=10, cursor=None)
    assert [t.id for t in page] == [task.id]
