"""Rendering a diarized transcript: display names, renames, speaker lines, OpenAI's
``diarized_json``. Split from app/speech/diarize.py (the engine and the merge); that
module re-exports these names, so callers import them from either place.

Speaker ids are ``speaker_1``, ``speaker_2``, ...; display names (``Speaker 1``, or a
name set by ``PATCH /v1/tasks/{id}/speakers``) are applied here, when a transcript is
rendered, so renaming never re-runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.core.safe_text import one_line
from app.core.schemas import Transcript

__all__ = [
    "default_name",
    "display_names",
    "rename",
    "rename_in_text",
    "speaker_names",
    "speaker_text",
    "to_diarized_json",
]


def default_name(speaker_id: str) -> str:
    """``speaker_2`` -> ``Speaker 2`` (any other id is shown as is)."""
    if speaker_id.startswith("speaker_") and speaker_id[8:].isdigit():
        return f"Speaker {speaker_id[8:]}"
    return speaker_id


def display_names(transcript: Transcript) -> dict[str, str]:
    """Speaker id -> the name to show: the one set by a rename, else ``Speaker N``.

    Names pass :func:`~app.core.safe_text.one_line` again, so one stored before names
    were cleaned on the way in still cannot break a line or hide its direction.
    """
    names = {}
    for s in transcript.speakers or []:
        names[s.id] = one_line(s.name or "") or default_name(s.id)
    for seg in transcript.segments:
        if seg.speaker and seg.speaker not in names:
            names[seg.speaker] = default_name(seg.speaker)
    return names


def speaker_names(transcript: Mapping) -> dict[str, str]:
    """:func:`display_names` for a stored transcript (a dict), without validating it all."""
    names = {}
    for s in transcript.get("speakers") or []:
        names[s["id"]] = one_line(str(s.get("name") or "")) or default_name(s["id"])
    return names


def rename(transcript: Transcript, names: Mapping[str, str | None]) -> Transcript:
    """Set display names (``None`` or ``""`` clears one). Unknown ids raise KeyError.

    Each name is stored normalised (:func:`~app.core.safe_text.one_line`): NFC, one line,
    no control or bidi characters; one left empty by that clears the name.
    """
    known = {s.id for s in transcript.speakers or []}
    unknown = sorted(set(names) - known)
    if unknown:
        raise KeyError(", ".join(unknown))
    speakers = [
        s.model_copy(
            update={"name": (one_line(names[s.id] or "") or None) if s.id in names else s.name}
        )
        for s in transcript.speakers or []
    ]
    return transcript.model_copy(update={"speakers": speakers})


def speaker_text(transcript: Transcript) -> str:
    """The transcript as speaker turns, one line each (``Speaker 1: ...``), for the LLM.

    Consecutive segments of one speaker join into one turn. Without speakers this is
    the plain text, so callers can always use it.
    """
    if not transcript.speakers:
        return transcript.text
    names = display_names(transcript)
    lines: list[tuple[str | None, str]] = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        if lines and lines[-1][0] == seg.speaker:
            lines[-1] = (seg.speaker, f"{lines[-1][1]} {text}")
        else:
            lines.append((seg.speaker, text))
    return "\n".join(f"{names.get(s, 'Unknown') if s else 'Unknown'}: {t}" for s, t in lines)


def rename_in_text(text: str, old_to_new: Mapping[str, str]) -> str:
    """Replace display names in generated text (a summary), longest first, whole words.

    The replacement is literal: a name such as ``A\\1`` or ``B\\n`` is a name, never
    a regex template (a group reference raised a 500; ``\\n`` became a newline).
    """
    import re

    for old in sorted(old_to_new, key=len, reverse=True):
        new = old_to_new[old]
        if old and new and old != new:
            text = re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", lambda _m, new=new: new, text)
    return text


def _letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: OpenAI's sequential speaker labels."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def to_diarized_json(transcript: Transcript, usage_seconds: float | None = None) -> dict:
    """OpenAI's ``response_format=diarized_json`` (model ``gpt-4o-transcribe-diarize``).

    ``{"task": "transcribe", "duration", "text", "segments": [{"type":
    "transcript.text.segment", "id", "start", "end", "text", "speaker"}], "usage"}``.
    Speakers are ``A``, ``B``, ... as OpenAI labels unknown speakers, or the names
    set by a rename (OpenAI uses ``known_speaker_names`` the same way).
    """
    order = [s.id for s in transcript.speakers or []]
    for seg in transcript.segments:
        if seg.speaker and seg.speaker not in order:
            order.append(seg.speaker)
    named = {s.id: one_line(s.name) for s in transcript.speakers or [] if s.name}
    label = {sid: named.get(sid) or _letters(i) for i, sid in enumerate(order)}
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{seg.id:03d}",
            "start": round(seg.start, 3),
            "end": round(seg.end, 3),
            "text": seg.text.strip(),
            "speaker": label.get(seg.speaker, "A") if seg.speaker else "A",
        }
        for seg in transcript.segments
        if seg.text.strip()
    ]
    return {
        "task": "transcribe",
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
        "segments": segments,
        "usage": {
            "type": "duration",
            "seconds": round(usage_seconds if usage_seconds is not None else transcript.duration_s),
        },
    }
