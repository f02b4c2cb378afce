"""Check a summary item's evidence against the transcript it claims to come from.

A 0.5B model invents things; we do not trust its items, we verify them. Every key
point and action item must quote the transcript: the quote has to occur in it
(ignoring case and punctuation), and the segments it occurs in become the item's
evidence (ids and timestamps). An item whose quote cannot be found is repaired
from the longest run of its words that does occur, or dropped.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from app.core.schemas import Evidence

_NON_WORD = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")
_APOSTROPHES = re.compile(r"[\u2019\u2018`´]")

# An action item exists only if somebody commits to something or is asked to. Its
# quote must carry one of these cues (matched on normalized text: no apostrophes).
COMMITMENT_CUES = re.compile(
    r"\b("
    r"i ?ll|i will|we ?ll|we will|you ?ll|you will|he ?ll|he will|she ?ll|she will|they ?ll|"
    r"they will|let ?s|let us|i am going to|im going to|we are going to|were going to|"
    r"going to|gonna|need to|needs to|have to|has to|must|should|will you|can you|could you|"
    r"would you|please|i can take|ill take|i promise|action item|todo|to do|by (monday|"
    r"tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|next week|end of)|"
    r"deadline|follow up|assign|responsible for|in charge of|make sure"
    r")\b"
)

MIN_REPAIR_WORDS = 4  # a shorter surviving run is too weak to call evidence
MAX_QUOTE_WORDS = 30


def normalize(text: str) -> str:
    """Lowercase, drop punctuation (apostrophes too: "I'll" ~ "ill"), collapse spaces."""
    text = _APOSTROPHES.sub("'", text.lower()).replace("'", "")
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


def has_commitment(text: str) -> bool:
    return COMMITMENT_CUES.search(normalize(text)) is not None


@dataclass(frozen=True)
class Seg:
    """The part of a transcript segment grounding needs."""

    id: int
    start: float | None
    end: float | None
    text: str
    speaker: str | None = None  # shown to the model ("Speaker 1: ..."), never part of quotes


class TranscriptIndex:
    """The transcript as one normalized word stream, with a map back to segments."""

    def __init__(self, segments: list[Seg]) -> None:
        self.segments = segments
        self.by_id = {s.id: s for s in segments}
        words: list[str] = []
        owner: list[int] = []  # segment position of each word
        for pos, seg in enumerate(segments):
            seg_words = normalize(seg.text).split()
            words += seg_words
            owner += [pos] * len(seg_words)
        self.words = words
        self.owner = owner
        # " word word ... " with the char offset where each word starts.
        self.text = " " + " ".join(words) + " "
        self.offsets: list[int] = []
        at = 1
        for w in words:
            self.offsets.append(at)
            at += len(w) + 1

    # -- lookup ----------------------------------------------------------------------

    def _word_index(self, char_pos: int) -> int:
        return max(0, bisect.bisect_right(self.offsets, char_pos) - 1)

    def find(self, quote: str, near: int | None = None) -> tuple[int, int] | None:
        """Word span [i, j) where the normalized quote occurs; nearest to segment ``near``."""
        q = normalize(quote)
        if not q:
            return None
        needle = f" {q} "
        hits: list[int] = []
        at = self.text.find(needle)
        while at != -1 and len(hits) < 50:
            hits.append(at)
            at = self.text.find(needle, at + 1)
        if not hits:
            return None
        if near is not None and near in self.by_id:
            target = next(i for i, s in enumerate(self.segments) if s.id == near)
            hits.sort(key=lambda h: abs(self.owner[self._word_index(h + 1)] - target))
        first = self._word_index(hits[0] + 1)
        return first, first + len(q.split())

    def longest_run(self, quote: str, min_words: int = MIN_REPAIR_WORDS) -> tuple[int, int] | None:
        """The longest run of consecutive quote words that occurs in the transcript."""
        qw = normalize(quote).split()
        for length in range(min(len(qw), MAX_QUOTE_WORDS), min_words - 1, -1):
            for i in range(0, len(qw) - length + 1):
                span = self.find(" ".join(qw[i : i + length]))
                if span:
                    return span
        return None

    def evidence(self, span: tuple[int, int]) -> Evidence:
        """Evidence for words [i, j): the segments they fall in and the original wording."""
        i, j = span
        j = min(j, i + MAX_QUOTE_WORDS)
        positions = sorted(set(self.owner[i:j]))
        segs = [self.segments[p] for p in positions]
        starts = [s.start for s in segs if s.start is not None]
        ends = [s.end for s in segs if s.end is not None]
        return Evidence(
            segments=[s.id for s in segs],
            start=min(starts) if starts else None,
            end=max(ends) if ends else None,
            quote=" ".join(self.words[i:j]),
        )

    def ground(self, quote: str, near: int | None = None) -> tuple[Evidence | None, bool]:
        """(evidence, repaired): the quote itself, else its longest occurring run, else None."""
        span = self.find(quote, near)
        if span:
            return self.evidence(span), False
        span = self.longest_run(quote)
        if span:
            return self.evidence(span), True
        return None, False

    def contains(self, text: str) -> bool:
        return self.find(text) is not None


def segments_from_text(text: str) -> list[Seg]:
    """Pseudo-segments (one per sentence, no timestamps) for callers that only have text."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]
    return [Seg(id=i, start=None, end=None, text=s) for i, s in enumerate(sentences)]


def segments_from_dicts(items: list) -> list[Seg]:
    """Accept Segment models or their dicts (what crosses a DeploymentHandle)."""
    out: list[Seg] = []
    for n, item in enumerate(items):
        d = item if isinstance(item, dict) else item.model_dump()
        text = str(d.get("text") or "").strip()
        if text:
            out.append(
                Seg(
                    id=int(d.get("id", n)),
                    start=None if d.get("start") is None else float(d["start"]),
                    end=None if d.get("end") is None else float(d["end"]),
                    text=text,
                    speaker=str(d["speaker"]) if d.get("speaker") else None,
                )
            )
    return out
