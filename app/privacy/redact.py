"""Replacing what :mod:`app.privacy.detect` finds: in a text, a transcript (segments,
words, text) and a summary (its evidence too), with one :class:`Redactor` per task so a
pseudonym stays the same across everything the task returns.

A transcript's segments are searched as one text (a number spoken across two segments
is still one number); a span's replacement goes in the first segment it touches. Words
are aligned to their segment's text: the words of a span merge into one word carrying
the replacement, timed from the first word's start to the last one's end, and those
times are the spans :func:`redact_transcript` returns for the audio. A segment that
has a span but no words gives its whole time (safe, if coarse).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.core.pii_terms import ALL_ENTITIES, MASK, PiiEntity, RedactMode, parse_policy
from app.core.schemas import Evidence, Redaction, Segment, Summary, Transcript, Word
from app.core.task_vocabulary import ProcessingOptions
from app.privacy.detect import PiiDetector, Span, is_person_name, load_detector, name_parts

#: Between segments when they are searched as one text: a space, so a number or a name
#: that Whisper split over two segments is still one.
_SEPARATOR = " "


@dataclass
class Redactor:
    """Finds and replaces one policy's entities; remembers pseudonyms (one per task)."""

    entities: tuple[PiiEntity, ...] = ALL_ENTITIES
    mode: RedactMode = RedactMode.LABEL
    detector: PiiDetector = field(default_factory=load_detector)
    _pseudonyms: dict[tuple[PiiEntity, str], str] = field(default_factory=dict)
    _counts: dict[PiiEntity, int] = field(default_factory=dict)
    found: dict[PiiEntity, int] = field(default_factory=dict)
    #: Names known before the text is read (speakers'): their mentions are names too.
    known_names: set[str] = field(default_factory=set)

    def replacement(self, span: Span) -> str:
        if self.mode == RedactMode.MASK:
            return MASK
        if self.mode == RedactMode.LABEL:
            return f"[{span.entity.value}]"
        key = (span.entity, self._canonical(span))
        if key not in self._pseudonyms:
            self._counts[span.entity] = self._counts.get(span.entity, 0) + 1
            self._pseudonyms[key] = f"[{span.entity.value}_{self._counts[span.entity]}]"
        return self._pseudonyms[key]

    def _canonical(self, span: Span) -> str:
        if span.entity != PiiEntity.PERSON:
            digits = re.sub(r"\D", "", span.text)
            return digits if len(digits) >= 5 else span.text.lower()
        parts = [p.lower() for p in name_parts(span.text)] or [span.text.lower()]
        # "Maria" after "Maria Gonzalez" is the same person: reuse the full name's key.
        for entity, known in self._pseudonyms:
            if entity == PiiEntity.PERSON and set(parts) <= set(known.split()):
                return known
        return " ".join(parts)

    def find(self, text: str) -> list[Span]:
        spans = self.detector.find(text, self.entities, sorted(self.known_names))
        # Full names first, so a later first-name-only mention gets their pseudonym.
        if self.mode == RedactMode.PSEUDONYM:
            for span in sorted(spans, key=lambda s: -len(s.text.split())):
                if span.entity == PiiEntity.PERSON:
                    self.replacement(span)
        for span in spans:
            self.found[span.entity] = self.found.get(span.entity, 0) + 1
        return spans

    def text(self, text: str) -> str:
        """``text`` with every entity replaced."""
        out, last = [], 0
        for span in self.find(text):
            out += [text[last : span.start], self.replacement(span)]
            last = span.end
        return "".join(out) + text[last:]

    def texts(self, texts: Iterable[str]) -> list[str]:
        return [self.text(t) for t in texts]

    def speaker_name(self, name: str | None) -> str | None:
        """A speaker's display name, when it is a person's name: their pseudonym, or none
        (shown as ``Speaker N``, so two speakers stay apart under one label)."""
        if not name or PiiEntity.PERSON not in self.entities:
            return name
        if not is_person_name(self.detector, name):
            return self.text(name)
        self.known_names.add(name.strip())
        span = Span(0, len(name), PiiEntity.PERSON, name.strip())
        self.found[PiiEntity.PERSON] = self.found.get(PiiEntity.PERSON, 0) + 1
        return self.replacement(span) if self.mode == RedactMode.PSEUDONYM else None


# --- transcripts ----------------------------------------------------------------------------


def _align(text: str, words: list[Word]) -> list[tuple[int, int] | None]:
    """Each word's character range in its segment's text (``None`` if it is not there)."""
    ranges: list[tuple[int, int] | None] = []
    cursor = 0
    for word in words:
        token = word.word.strip()
        at = text.find(token, cursor) if token else -1
        if at < 0:
            ranges.append(None)
            continue
        ranges.append((at, at + len(token)))
        cursor = at + len(token)
    return ranges


def _redact_words(
    redactor: Redactor,
    words: list[Word],
    ranges: list[tuple[int, int] | None],
    spans: list[tuple[int, int, str]],
) -> tuple[list[Word], list[tuple[float, float]]]:
    """Words with each span's words merged into one carrying its replacement."""
    merged: dict[int, Word] = {}
    consumed: set[int] = set()
    times: list[tuple[float, float]] = []
    for start, end, replacement in spans:
        hit = [i for i, r in enumerate(ranges) if r is not None and r[0] < end and r[1] > start]
        hit = [i for i in hit if i not in consumed and i not in merged]
        if not hit:
            continue
        first, last = words[hit[0]], words[hit[-1]]
        times.append((first.start, last.end))
        if replacement:
            tail_start, tail_end = ranges[hit[-1]] or (end, end)
            tail = last.word.strip()[max(0, end - tail_start) :] if tail_end > end else ""
            update = {"word": f" {replacement}{tail}", "end": last.end, "probability": None}
            merged[hit[0]] = first.model_copy(update=update)
            consumed.update(hit[1:])
        else:  # the tail of a span that began in an earlier segment
            consumed.update(hit)
    out: list[Word] = []
    for i, word in enumerate(words):
        if i in consumed:
            continue
        if i in merged:
            out.append(merged[i])
            continue
        if ranges[i] is None:  # not found in the segment's text: judge the word alone
            cleaned = redactor.text(word.word)
            if cleaned != word.word:
                times.append((word.start, word.end))
                word = word.model_copy(update={"word": cleaned})
        out.append(word)
    return out, times


def redact_transcript(
    transcript: Transcript, redactor: Redactor
) -> tuple[Transcript, list[tuple[float, float]]]:
    """The transcript with text, segments and words redacted, and the audio times to cover."""
    speakers = [
        s.model_copy(update={"name": redactor.speaker_name(s.name)})
        for s in transcript.speakers or []
    ]
    transcript = transcript.model_copy(update={"speakers": speakers or transcript.speakers})
    if not transcript.segments:
        return transcript.model_copy(update={"text": redactor.text(transcript.text)}), []
    texts = [s.text for s in transcript.segments]
    offsets, pos = [], 0
    for text in texts:
        offsets.append(pos)
        pos += len(text) + len(_SEPARATOR)
    joined = _SEPARATOR.join(texts)
    spans = redactor.find(joined)
    segments: list[Segment] = []
    times: list[tuple[float, float]] = []
    for seg, text, base in zip(transcript.segments, texts, offsets, strict=True):
        local: list[tuple[int, int, str]] = []  # (start, end, replacement) in this segment
        for span in spans:
            start, end = max(span.start, base) - base, min(span.end, base + len(text)) - base
            if start < end:
                local.append((start, end, redactor.replacement(span) if span.start >= base else ""))
        if not local:
            segments.append(seg)
            continue
        pieces, last = [], 0
        for start, end, replacement in local:
            pieces += [text[last:start], replacement]
            last = end
        new_text = re.sub(r"  +", " ", "".join(pieces) + text[last:]).strip()
        update: dict = {"text": new_text, "tokens": None}
        if seg.words:
            update["words"], word_times = _redact_words(
                redactor, seg.words, _align(text, seg.words), local
            )
            times += word_times
        else:
            times.append((seg.start, seg.end))
        segments.append(seg.model_copy(update=update))
    text = " ".join(s.text for s in segments if s.text).strip()
    return transcript.model_copy(update={"segments": segments, "text": text}), sorted(times)


# --- summaries ------------------------------------------------------------------------------


def redact_summary(summary: Summary, redactor: Redactor) -> Summary:
    """The summary, its items, chapters and evidence quotes, redacted (the LLM read the
    redacted transcript; this catches what it may have written anyway)."""

    def evidence(items: list[Evidence]) -> list[Evidence]:
        return [e.model_copy(update={"quote": redactor.text(e.quote)}) for e in items]

    return summary.model_copy(
        update={
            "summary": redactor.text(summary.summary),
            "key_points": redactor.texts(summary.key_points),
            "action_items": redactor.texts(summary.action_items),
            "key_points_evidence": evidence(summary.key_points_evidence),
            "action_items_evidence": evidence(summary.action_items_evidence),
            "chapters": [
                c.model_copy(
                    update={"title": redactor.text(c.title), "gist": redactor.text(c.gist)}
                )
                for c in summary.chapters
            ],
        }
    )


def redactor_for(options: ProcessingOptions) -> Redactor | None:
    """The task's redactor (``None`` without ``redact_pii``); loads spaCy on first use."""
    if not options.redact_pii:
        return None
    return Redactor(parse_policy(options.redact_policy), RedactMode(options.redact_mode))


def report(redactor: Redactor, audio_spans: list[tuple[float, float]]) -> Redaction:
    """The result's account of what was redacted: counts and times, never the values."""
    return Redaction(
        mode=redactor.mode.value,
        entities=[e.value for e in redactor.entities],
        found={e.value: n for e, n in redactor.found.items()},
        audio_spans=[(round(a, 3), round(b, 3)) for a, b in audio_spans],
    )


__all__ = ["Redactor", "redact_summary", "redact_transcript", "redactor_for", "report"]
