"""Merging a diarization into a transcript: each segment (split at a word where the
speaker changes) and word gets its speaker, and overlapped words both. Split from
app/speech/diarize.py (the engine), which re-exports these names."""

from __future__ import annotations

from collections.abc import Iterable

from app.core.schemas import DiarizeOutput, Segment, SpeakerInfo, SpeakerTurn, Transcript, Word


def _overlaps(start: float, end: float, turns: list[SpeakerTurn]) -> dict[str, float]:
    got: dict[str, float] = {}
    for t in turns:
        if t.end <= start:
            continue
        if t.start >= end:
            break
        got[t.speaker] = got.get(t.speaker, 0.0) + min(end, t.end) - max(start, t.start)
    return got


def _speaker_at(start: float, end: float, turns: list[SpeakerTurn]) -> str | None:
    """The speaker overlapping [start, end] most; else the nearest turn (within 1 s)."""
    if not turns:
        return None
    got = _overlaps(start, end, turns)
    if got:
        return max(got, key=got.get)
    mid = (start + end) / 2
    nearest = min(turns, key=lambda t: min(abs(mid - t.start), abs(mid - t.end)))
    if min(abs(mid - nearest.start), abs(mid - nearest.end)) <= 1.0:
        return nearest.speaker
    return None


def _cotalkers(start: float, end: float, turns: list[SpeakerTurn], main: str | None) -> list[str]:
    """Speakers other than ``main`` talking *at the same time as* another speaker inside
    [start, end] for at least a third of it (or 0.3 s): the diarizer's overlap."""
    if main is None:
        return []
    inside = [t for t in turns if t.start < end and t.end > start]
    if len(inside) < 2:
        return []
    need = min(0.3, (end - start) / 3)
    got: dict[str, float] = {}
    for t in inside:
        if t.speaker == main:
            continue
        for u in inside:
            if u.speaker == t.speaker:
                continue
            both = min(end, t.end, u.end) - max(start, t.start, u.start)
            if both > 0:
                got[t.speaker] = got.get(t.speaker, 0.0) + both
    return [k for k, v in sorted(got.items(), key=lambda kv: -kv[1]) if v >= need][:1]


def _with_cotalkers(item, turns: list[SpeakerTurn]):
    """``item`` (a Word or Segment) with ``speakers`` set when someone talks over it."""
    others = _cotalkers(item.start, item.end, turns, item.speaker)
    if not others:
        return item
    return item.model_copy(update={"speakers": [item.speaker, *others]})


def assign_speakers(
    transcript: Transcript,
    diarization: DiarizeOutput,
    words: bool = False,
    split: bool = True,
) -> Transcript:
    """The transcript with ``speaker`` on every segment (and word, when ``words``).

    With word timestamps a segment that spans a speaker change is split at the word
    where the speaker changes (``split``), so each segment has one speaker; without
    them each segment gets the speaker it overlaps most. Segment ids are renumbered.

    Where the diarizer heard two people at once, the word or segment also gets
    ``speakers`` (main speaker first, then the one talking over), so overlap is not
    silently given to one person.
    """
    turns = sorted(diarization.turns, key=lambda t: t.start)
    segments: list[Segment] = []
    for seg in transcript.segments:
        if seg.words:
            tagged = [
                w.model_copy(update={"speaker": _speaker_at(w.start, w.end, turns)})
                for w in seg.words
            ]
            # Words the diarizer missed (between turns) take their neighbour's speaker.
            for i, w in enumerate(tagged):
                if w.speaker is None:
                    prev = next((x.speaker for x in reversed(tagged[:i]) if x.speaker), None)
                    nxt = next((x.speaker for x in tagged[i + 1 :] if x.speaker), None)
                    w.speaker = prev or nxt
            tagged = [_with_cotalkers(w, turns) for w in tagged]
            runs: list[list[Word]] = []
            for w in tagged:
                if split and runs and runs[-1][-1].speaker != w.speaker:
                    runs.append([w])
                elif runs:
                    runs[-1].append(w)
                else:
                    runs.append([w])
            for run in runs:
                counts: dict[str | None, float] = {}
                for w in run:
                    counts[w.speaker] = counts.get(w.speaker, 0.0) + max(w.end - w.start, 0.01)
                speaker = max(counts, key=counts.get)
                single = len(runs) == 1
                both = [x for w in run for x in (w.speakers or []) if x != speaker]
                segments.append(
                    seg.model_copy(
                        update={
                            "start": seg.start if single else run[0].start,
                            "end": seg.end if single else run[-1].end,
                            "text": seg.text if single else "".join(w.word for w in run),
                            "speaker": speaker,
                            "speakers": [speaker, both[0]] if both else None,
                            "words": run if words else None,
                            "tokens": seg.tokens if single else None,
                        }
                    )
                )
        else:
            tagged_seg = seg.model_copy(update={"speaker": _speaker_at(seg.start, seg.end, turns)})
            segments.append(_with_cotalkers(tagged_seg, turns))
    for i, seg in enumerate(segments):
        seg.id = i
    return transcript.model_copy(
        update={
            "segments": segments,
            "speakers": speakers_of(segments, diarization),
            "speaker_count": diarization.speaker_count,
            "turns": turns,
        }
    )


def speakers_of(segments: list[Segment], diarization: DiarizeOutput) -> list[SpeakerInfo]:
    """The diarizer's speakers (most speaking time first), including any whose speech
    produced no text: their speaking time is still part of the conversation."""
    return [s.model_copy() for s in diarization.speakers]


def turns_of(items: Iterable[SpeakerTurn]) -> list[tuple[float, float, str]]:
    """(start, end, speaker) tuples, as :mod:`app.speech.der` scores them."""
    return [(t.start, t.end, t.speaker) for t in items]
