"""SubRip (SRT) and WebVTT captions from transcript segments.

Shared by ``POST /v1/audio/transcriptions`` (``response_format=srt|vtt``) and any
route that exports a stored transcript. Segments may be :class:`app.core.schemas.Segment`
objects or plain dicts with ``start``, ``end`` (seconds) and ``text``.

Cues are numbered from 1 without gaps (segments with no text are skipped), times
never run backwards (a cue's end is at least its start, and a start is never
before the previous cue's start), and text is kept to single-paragraph cues so
a blank line inside a segment cannot end the cue early.

Nothing in a segment's text or a speaker's name can make a cue of its own (issue 30):
control and bidi characters are dropped, every kind of line break (``\r``,
U+2028...) is a newline inside the cue (one space in a name), and no line of text
reads as a cue timing: in SRT an arrow on a line that starts with a digit becomes
``->`` (readers look for ``00:00:01,000 --> ...`` at the start of a line; an arrow
mid-sentence is kept), in VTT ``<``, ``>`` and ``&`` are escaped everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.core.safe_text import multi_line, one_line

__all__ = ["format_timestamp", "to_srt", "to_vtt", "cues"]

_BLANK_LINES = re.compile(r"\n\s*\n+")
#: A cue timing's arrow, however many dashes.
_ARROW = re.compile(r"-{2,}>")


def _get(segment: Any, key: str) -> Any:
    if isinstance(segment, dict):
        return segment.get(key)
    return getattr(segment, key, None)


def format_timestamp(seconds: float, decimal_marker: str = ",", always_hours: bool = True) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (VTT); negative times clamp to 0."""
    total_ms = max(0, int(round(float(seconds or 0.0) * 1000)))
    hours, rem = divmod(total_ms, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    secs, ms = divmod(rem, 1000)
    if hours or always_hours:
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"
    return f"{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _clean_text(text: str) -> str:
    """Printable cue text: line breaks are ``\n`` (no blank line), no control characters."""
    return _BLANK_LINES.sub("\n", multi_line(text))


def cues(segments: Iterable[Any]) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` per non-empty segment, with monotonic, non-negative times."""
    out: list[tuple[float, float, str]] = []
    last_start = 0.0
    for seg in segments:
        text = _clean_text(str(_get(seg, "text") or ""))
        if not text:
            continue
        start = max(float(_get(seg, "start") or 0.0), 0.0, last_start)
        end = max(float(_get(seg, "end") or 0.0), start)
        out.append((start, end, text))
        last_start = start
    return out


def _speaker_names(segments: list[Any], names: Mapping[str, str] | None) -> list[str | None]:
    """The display name per non-empty segment (``None`` when it has no speaker)."""
    from app.speech.diarize import default_name

    out: list[str | None] = []
    for seg in segments:
        if not _clean_text(str(_get(seg, "text") or "")):
            continue
        spk = _get(seg, "speaker")
        name = one_line(str((names or {}).get(spk) or "")) if spk else ""
        out.append((name or default_name(str(spk))) if spk else None)
    return out


def _srt_escape(text: str) -> str:
    """SubRip has no escapes: a text line that starts like a timing loses its arrow, so no
    reader takes it for the next cue (``Hi\\n00:00:09,000 --> ...``)."""
    return "\n".join(
        _ARROW.sub("->", line) if line.lstrip()[:1].isdigit() else line for line in text.split("\n")
    )


def to_srt(segments: Iterable[Any], names: Mapping[str, str] | None = None) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each.

    Diarized segments start with ``[Speaker 1] `` (or the name from ``names``, speaker id
    -> display name): SRT has no voice tag, and a bracketed prefix is what players show.
    """
    segments = list(segments)
    speakers = _speaker_names(segments, names)
    blocks = []
    for i, (start, end, text) in enumerate(cues(segments), start=1):
        text = _srt_escape(text)
        if speakers[i - 1]:
            text = f"[{_srt_escape(speakers[i - 1])}] {text}"
        blocks.append(f"{i}\n{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    # Cue text is HTML-like: escape markup characters; "-->" may not appear in a cue.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def to_vtt(segments: Iterable[Any], names: Mapping[str, str] | None = None) -> str:
    """WebVTT: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues.

    Diarized segments carry a voice span, ``<v Speaker 1>text``.
    """
    segments = list(segments)
    speakers = _speaker_names(segments, names)
    blocks = ["WEBVTT\n"]
    for i, (start, end, text) in enumerate(cues(segments)):
        timing = f"{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}"
        body = _vtt_escape(text)
        if speakers[i]:
            voice = _vtt_escape(speakers[i])  # one line already (_speaker_names)
            body = "\n".join(f"<v {voice}>{line}" for line in body.split("\n"))
        blocks.append(f"{timing}\n{body}\n")
    return "\n".join(blocks)
