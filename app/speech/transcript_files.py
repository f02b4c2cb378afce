"""Transcripts people already have: WebVTT, SRT, plain text, or a JSON list of speaker turns.

A meeting tool's export, a caption file or a pasted text becomes the same
:class:`~app.core.schemas.Transcript` that speech to text produces, so summary,
chapters, search and every export work the same. Parsing is bounded (size, cue
count, line length) and total: a file either parses into at least one segment
with text, or raises :class:`TranscriptFileError` with a code and a message that
says what is wrong (a 422 at submission).

Speakers: WebVTT voice spans (``<v Alice>``), a ``Name: text`` prefix in SRT or
plain text, or a ``speaker`` field in JSON become segment speakers (ids
``speaker_N`` named as in the file, as a rename would), so the summary reads
``Alice: ...`` lines and renaming works as for diarized audio. Plain text and JSON
turns without times get estimated times (150 words a minute), so chapters and
evidence still have an order and a rough position.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

from app.core.schemas import Segment, SpeakerInfo, Transcript

#: Transcript files are text: this is generous for a day-long meeting.
MAX_TRANSCRIPT_BYTES = 5 * 1024 * 1024
MAX_SEGMENTS = 20_000
MAX_SEGMENT_CHARS = 5_000
MAX_SPEAKER_CHARS = 100
#: Speaking rate for text without times (words per second; about 150 a minute).
WORDS_PER_S = 2.5
FORMATS = ("vtt", "srt", "txt", "json")

_SPEAKER_PREFIX = re.compile(r"^\s*([^\W\d][\w .'\-]{0,60}?)\s*:\s+(.+)$", re.S)
_SRT_TIME = re.compile(r"^\s*\d+:\d{2}:\d{2}[,.]\d{1,3}\s*-->")
_UNPRINTABLE = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}


class TranscriptFileError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Turn:
    text: str
    speaker: str | None = None
    start: float | None = None
    end: float | None = None


def clean_text(value: str, limit: int = MAX_SEGMENT_CHARS) -> str:
    """NFC, no control or bidi characters, whitespace runs collapsed, bounded."""
    value = unicodedata.normalize("NFC", value)
    value = "".join(
        " " if unicodedata.category(ch) in _UNPRINTABLE or ch in "\t\r\n" else ch for ch in value
    )
    return " ".join(value.split())[:limit]


def _speaker(value: Any) -> str | None:
    if value is None:
        return None
    name = clean_text(str(value), MAX_SPEAKER_CHARS)
    return name or None


def detect_format(data: bytes, filename: str | None) -> str:
    """``vtt``, ``srt``, ``json`` or ``txt``, from the content first, then the name."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").decode("utf-8", "replace")
    if head.startswith("WEBVTT"):
        return "vtt"
    if head[:1] and head[0] in "[{":
        return "json"
    lines = head.splitlines()
    if any(_SRT_TIME.match(line) for line in lines[:4]):
        return "srt"
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if "." in (filename or "") else ""
    return suffix if suffix in FORMATS else "txt"


def _decode(data: bytes) -> str:
    if len(data) > MAX_TRANSCRIPT_BYTES:
        raise TranscriptFileError(
            "transcript_too_large",
            f"the transcript is larger than {MAX_TRANSCRIPT_BYTES // (1024 * 1024)} MiB",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TranscriptFileError(
            "transcript_not_utf8", "the transcript must be UTF-8 text"
        ) from None


def _captions(text: str, fmt: str) -> list[Turn]:
    try:
        parsed = webvtt.from_buffer(io.StringIO(text), format=fmt)
    except (MalformedFileError, MalformedCaptionError) as exc:
        raise TranscriptFileError(
            "invalid_transcript", f"not a valid {fmt.upper()} file: {exc}"
        ) from None
    turns = []
    for cue in parsed.captions:
        speaker, body = cue.voice, cue.text
        if speaker is None:
            speaker, body = _split_speaker(body)
        start = cue.start_time.in_milliseconds() / 1000
        end = cue.end_time.in_milliseconds() / 1000
        turns.append(Turn(body, _speaker(speaker), start, max(start, end)))
    return turns


def _split_speaker(line: str) -> tuple[str | None, str]:
    match = _SPEAKER_PREFIX.match(line)
    if match is None:
        return None, line
    return match.group(1), match.group(2)


def _plain(text: str) -> list[Turn]:
    """One turn per paragraph or ``Name: ...`` line."""
    turns: list[Turn] = []
    for block in re.split(r"\n\s*\n|\n(?=[^\W\d][\w .'\-]{0,60}:\s)", text):
        speaker, body = _split_speaker(block.strip())
        if body.strip():
            turns.append(Turn(body, _speaker(speaker)))
    return turns


def _number(value: Any, field: str, index: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranscriptFileError(
            "invalid_transcript", f"turn {index}: '{field}' must be a number of seconds"
        )
    if not 0 <= value < 7 * 86400:
        raise TranscriptFileError("invalid_transcript", f"turn {index}: '{field}' out of range")
    return float(value)


def _json_turns(text: str) -> list[Turn]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise TranscriptFileError("invalid_transcript", "not valid JSON") from None
    if isinstance(doc, dict):
        doc = doc.get("segments") or doc.get("turns") or doc.get("transcript")
    if not isinstance(doc, list):
        raise TranscriptFileError(
            "invalid_transcript",
            "JSON transcripts are a list of turns ({speaker, text, start, end}), "
            "or an object with 'segments' or 'turns'",
        )
    turns = []
    for i, item in enumerate(doc[: MAX_SEGMENTS + 1]):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise TranscriptFileError(
                "invalid_transcript", f"turn {i}: each turn needs a 'text' string"
            )
        speaker = item.get("speaker", item.get("name"))
        if speaker is not None and not isinstance(speaker, str | int):
            raise TranscriptFileError("invalid_transcript", f"turn {i}: bad 'speaker'")
        start = _number(item.get("start"), "start", i)
        end = _number(item.get("end"), "end", i)
        turns.append(Turn(item["text"], _speaker(speaker), start, end))
    return turns


def _timed(turns: list[Turn]) -> tuple[list[Turn], bool]:
    """Every turn with a start and end: given times kept, missing ones estimated."""
    timed = all(t.start is not None for t in turns)
    out, clock = [], 0.0
    for turn in turns:
        words = max(1, len(turn.text.split()))
        start = turn.start if timed and turn.start is not None else clock
        start = max(start, 0.0)
        end = turn.end if timed and turn.end is not None else start + words / WORDS_PER_S
        end = max(end, start)
        out.append(Turn(turn.text, turn.speaker, round(start, 3), round(end, 3)))
        clock = end
    return out, timed


def parse_transcript(
    data: bytes, filename: str | None = None, *, language: str | None = None
) -> Transcript:
    """The file as a transcript (raises :class:`TranscriptFileError`)."""
    text = _decode(data)
    fmt = detect_format(data, filename)
    if fmt in ("vtt", "srt"):
        raw = _captions(text, fmt)
    elif fmt == "json":
        raw = _json_turns(text)
    else:
        raw = _plain(text)
    if len(raw) > MAX_SEGMENTS:
        raise TranscriptFileError(
            "transcript_too_long", f"the transcript has more than {MAX_SEGMENTS} turns"
        )
    turns = [Turn(clean_text(t.text), t.speaker, t.start, t.end) for t in raw]
    turns = [t for t in turns if t.text]
    if not turns:
        raise TranscriptFileError(
            "empty_transcript", f"no text found in the {fmt.upper()} transcript"
        )
    turns, _ = _timed(turns)
    # Speakers get the diarizer's ids (speaker_1, ...) with the file's names as their
    # display names, so renaming and every export treat them alike.
    ids: dict[str, str] = {}
    for t in turns:
        if t.speaker and t.speaker not in ids:
            ids[t.speaker] = f"speaker_{len(ids) + 1}"
    segments = [
        Segment(
            id=i,
            start=t.start or 0.0,
            end=t.end or 0.0,
            text=t.text,
            speaker=ids.get(t.speaker) if t.speaker else None,
        )
        for i, t in enumerate(turns)
    ]
    speaking = dict.fromkeys(ids.values(), 0.0)
    for seg in segments:
        if seg.speaker:
            speaking[seg.speaker] += seg.end - seg.start
    speakers = [
        SpeakerInfo(id=sid, name=name, speaking_s=round(speaking[sid], 2))
        for name, sid in ids.items()
    ]
    return Transcript(
        text=" ".join(s.text for s in segments),
        language=language or "en",
        duration_s=max(s.end for s in segments),
        segments=segments,
        speakers=speakers or None,
    )


__all__ = [
    "FORMATS",
    "MAX_TRANSCRIPT_BYTES",
    "TranscriptFileError",
    "clean_text",
    "detect_format",
    "parse_transcript",
]
