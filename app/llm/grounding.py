"""Check a summary item's evidence against the transcript it claims to come from.

A 0.5B model invents things; we do not trust its items, we verify them. The model
sees the transcript as numbered lines (one sentence each) and cites a line for every
key point and action item. The service then checks that the item is *supported* by
the line it cites (or a neighbour: small models miscount by one), that is, the two
share enough content words; the line's own words become the item's quote, and its
segment the evidence (ids and timestamps). An item no line supports is dropped.

Answers that quote instead of citing (an OpenAI-compatible endpoint with the older
prompt) are still accepted: the quote has to occur in the transcript (ignoring case
and punctuation), or is repaired from its longest occurring run, or dropped.
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
MAX_LINE_WORDS = 30  # a run-on sentence is cut into lines of at most this many words

# Words that carry no topic: support is judged on the others.
STOPWORDS = frozenset(
    "a an the and or but so of to in on at for with from by as is are was were be been being "
    "am i you he she it we they me him her us them my your our their his its this that these "
    "those there here do does did doing done have has had having not no yes yeah okay ok oh um "
    "uh mm hmm mhm like just really well right know think what which who whom how when where "
    "why if then than also very can could would will shall should may might must all any some "
    "one its im youre thats dont ill well were theyre weve ive id get got go going gonna want "
    "let lets say said thing things kind sort about into out up down over more most much many "
    "other such only own same too again further once now even still yet ever speaker speakers "
    "people person someone something everyone everybody anyone lot way because first then "
    "maybe actually remember guess sure yes".split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")


def stem(word: str) -> str:
    """A crude stem (no dependency): enough to match "items"/"item", "cleaning"/"clean"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:7]


def content_words(text: str) -> set[str]:
    return {stem(w) for w in normalize(text).split() if w not in STOPWORDS and len(w) > 2}


def support(claim: str, source: str) -> tuple[int, float]:
    """(shared content words, share of the claim's content words found in the source)."""
    claim_words = content_words(claim)
    shared = len(claim_words & content_words(source))
    return shared, shared / max(1, len(claim_words))


def supports(claim: str, source: str, strict: bool = False) -> bool:
    """Does ``source`` back ``claim``? ``strict`` for a line found by search, not cited."""
    shared, share = support(claim, source)
    if strict:
        return shared >= 3 and share >= 0.5
    return (shared >= 2 and share >= 0.3) or (shared >= 1 and share >= 0.99)


def normalize(text: str) -> str:
    """Lowercase, drop punctuation (apostrophes too: "I'll" ~ "ill"), collapse spaces."""
    text = _APOSTROPHES.sub("'", text.lower()).replace("'", "")
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


# A cue after one of these says what a thing must be, not what a person will do: "It also
# needs to have the company colours included in it." (an action item on QMSum val).
IMPERSONAL_SUBJECTS = frozenset("it its this that thats there theres which what".split())
_BETWEEN = frozenset("also really just still definitely probably only maybe actually all".split())


def has_commitment(text: str) -> bool:
    """Somebody commits or is asked: a cue whose subject, where it has one, is a person."""
    norm = normalize(text)
    for match in COMMITMENT_CUES.finditer(norm):
        before = norm[: match.start()].split()
        while before and before[-1] in _BETWEEN:  # "it also needs to"
            before.pop()
        if not before or before[-1] not in IMPERSONAL_SUBJECTS:
            return True
    return False


@dataclass(frozen=True)
class Seg:
    """The part of a transcript segment grounding needs."""

    id: int
    start: float | None
    end: float | None
    text: str
    speaker: str | None = None  # shown to the model ("Speaker 1: ..."), never part of quotes


@dataclass(frozen=True)
class Line:
    """One numbered line shown to the model: a sentence (or a piece of a run-on one)."""

    n: int
    seg: Seg
    text: str


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


def number_lines(segments: list[Seg], max_words: int = MAX_LINE_WORDS) -> list[Line]:
    """Sentences of all segments, numbered from 1, each at most ``max_words`` words."""
    lines: list[Line] = []
    for seg in segments:
        for sentence in _SENTENCE_SPLIT.split(seg.text.strip()):
            words = sentence.split()
            for i in range(0, len(words), max_words):
                piece = " ".join(words[i : i + max_words])
                if normalize(piece):
                    lines.append(Line(len(lines) + 1, seg, piece))
    return lines


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
        # Every word said, also without a plural or possessive "s" ("Sheila's" ~ "Sheila").
        self.vocabulary = set(words) | {w[:-1] for w in words if w.endswith("s")}
        # The model sees who speaks ("[3] Project Manager: ..."): naming them invents nothing.
        self.speaker_words = {
            w for s in segments if s.speaker for w in normalize(s.speaker).split()
        }
        self.vocabulary |= self.speaker_words
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

    def line_evidence(self, line: Line) -> Evidence:
        """Evidence for a numbered line: its words as they occur, in its segment."""
        span = self.find(line.text, near=line.seg.id)
        if span:
            return self.evidence(span)
        words = normalize(line.text).split()[:MAX_QUOTE_WORDS]
        return Evidence(
            segments=[line.seg.id], start=line.seg.start, end=line.seg.end, quote=" ".join(words)
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
