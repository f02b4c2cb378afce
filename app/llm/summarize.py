"""Turn a transcript into a summary a person can check, whatever its length.

The model sees the transcript as numbered lines (one sentence each) and must cite,
for every key point and action item, the line it comes from. Citing a number costs
the model a few tokens where copying a quote cost hundreds (a 0.5B model copies
whole paragraphs and runs out of tokens before the summary). The service then
verifies (:mod:`app.llm.grounding`): the cited line (or a neighbour) must share
the item's content words, its words become the quote, action items must cite a
commitment, and the whole answer must not be degenerate (:mod:`app.llm.checks`).
A failed answer is retried once with a different prompt and temperature; a second
failure falls back to the most central transcript sentences
(:mod:`app.llm.extractive`), labelled as such.

Transcripts longer than one call allows, or long enough to deserve chapters,
are chunked on segment boundaries with overlap; each chunk is summarized with
its time range (map) and the parts are merged with deduplication (reduce).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from app.core.schemas import Chapter, Evidence, SummarizeOutput, Summary
from app.llm import checks, extractive
from app.llm.engines import LLMEngine
from app.llm.grounding import (
    Line,
    Seg,
    TranscriptIndex,
    content_words,
    has_commitment,
    normalize,
    number_lines,
    segments_from_dicts,
    segments_from_text,
    supports,
)

# The flat prompt of the ungrounded schema; the vLLM batch path still uses it.
DEFAULT_SYSTEM_PROMPT = (
    "You summarize transcripts of recorded speech (meetings, calls, talks). "
    "Answer in JSON with: summary (2-4 sentences), key_points (the main points, short), "
    "action_items (tasks someone must do; empty if none). Use only facts from the transcript."
)
GROUNDED_SYSTEM_PROMPT = (
    "You summarize transcripts of recorded speech (meetings, calls, talks). The transcript "
    "comes as numbered lines: [12] text. Answer in JSON.\n"
    "title (when asked): 2 to 6 words naming the topic the speakers discuss, never just "
    '"meeting" or "summary".\n'
    "key_points: the main points. For each: line (the number of the line it comes from) and "
    "point (one short sentence that reuses the key words of that line).\n"
    "action_items: ONLY tasks a speaker explicitly commits to or asks someone to do, with "
    'words like "I\'ll", "we will", "let\'s", "need to", "can you". For each: line (the '
    "line with those words) and task. Most conversations have no such tasks: then "
    "action_items is []. Never invent tasks.\n"
    "summary: 2-4 sentences in your own words on what the speakers said: who, what, where, "
    "decisions. Only facts stated in the transcript. Do not describe the transcript, the "
    "recording or the meeting itself."
)
RETRY_HINT = (
    "Your previous answer was rejected ({problems}). Write about what the speakers actually "
    "said, with different wording and no repetition; cite the line each item comes from."
)
REDUCE_SYSTEM_PROMPT = (
    "You merge summaries of consecutive parts of one recording into one summary of the "
    "whole: 3-5 sentences in your own words, in order, no repetition. Do not describe the "
    "recording or the summaries themselves. Answer in JSON."
)
NO_SPEECH = Summary(
    summary="No speech was detected in the audio.", key_points=[], action_items=[], method="none"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

MAX_POINTS = 5
MAX_ACTIONS = 5
MAX_MERGED_POINTS = 8
MAX_MERGED_ACTIONS = 10
CHAPTERS_MIN_S = 600.0  # recordings this long get chapters
CHAPTER_TARGET_S = 300.0  # and chunks of at most this span, one chapter each
OVERLAP_SEGMENTS = 1  # segments repeated at the start of the next chunk, to keep the thread
RETRY_TEMPERATURE = 0.7
MAX_ITEM_WORDS = 30
MIN_POINT_WORDS = 3  # content words a key point needs to say anything ("Hopefully that works.")
MIN_POINTS = 2  # fewer grounded points from the model: central sentences fill up to 3
EXTRACTIVE_POINTS = "llm_extractive_points"  # method: LLM summary, some points extractive
# A title made of these words alone names no topic ("Meeting Summary").
GENERIC_TITLE_WORDS = content_words(
    "meeting meetings summary summaries call calls discussion discussions overview notes note "
    "conversation conversations transcript recording part chapter agenda update updates "
    "introduction introductions session topic topics general weekly team group and of the"
)


def grounded_schema(max_points: int = MAX_POINTS, max_actions: int = MAX_ACTIONS, title=False):
    """JSON schema for one call; plain enough for llama.cpp's grammar converter.

    ``maxItems`` bounds the lists (a small model loops otherwise); no ``maxLength``
    (it blows llama.cpp's sampler stack), ``max_tokens`` bounds length instead.
    """
    line = {"type": "integer"}
    text = {"type": "string"}
    point = {
        "type": "object",
        "properties": {"line": line, "point": text},
        "required": ["line", "point"],
        "additionalProperties": False,
    }
    action = {
        "type": "object",
        "properties": {"line": line, "task": text},
        "required": ["line", "task"],
        "additionalProperties": False,
    }
    # Items first, summary last: the model writes the summary after it has picked the
    # evidence, and a summary cut off by max_tokens loses the least.
    props: dict = {"title": text} if title else {}
    props |= {
        "key_points": {"type": "array", "items": point, "maxItems": max_points},
        "action_items": {"type": "array", "items": action, "maxItems": max_actions},
        "summary": text,
    }
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


REDUCE_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}


@dataclass
class SummaryStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    retries: int = 0
    dropped: int = 0
    repaired: int = 0


@dataclass
class Item:
    text: str
    evidence: Evidence


@dataclass
class Part:
    """One call's checked result (a whole short transcript, or one chunk)."""

    summary: str
    points: list[Item] = field(default_factory=list)
    actions: list[Item] = field(default_factory=list)
    title: str = ""
    method: str = "llm"
    start: float | None = None
    end: float | None = None


class TranscriptSummarizer:
    def __init__(
        self,
        engine: LLMEngine,
        max_output_tokens: int = 512,
        temperature: float = 0.2,
        system_prompt: str | None = None,
        chapters_min_s: float = CHAPTERS_MIN_S,
        chapter_target_s: float = CHAPTER_TARGET_S,
    ) -> None:
        self.engine = engine
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt or GROUNDED_SYSTEM_PROMPT
        self.chapters_min_s = chapters_min_s
        self.chapter_target_s = chapter_target_s

    # -- budgeting ------------------------------------------------------------------

    def _overhead_tokens(self, instruction: str | None) -> int:
        framing = self.system_prompt + (instruction or "") + RETRY_HINT + "Transcript:\n"
        # Chat template tokens (role markers) and the time-range line add a few dozen.
        return self.engine.count_tokens(framing) + 64

    def input_budget(self, instruction: str | None = None) -> int:
        budget = (
            self.engine.context_tokens - self.max_output_tokens - self._overhead_tokens(instruction)
        )
        if budget < 64:
            raise ValueError(
                f"context window {self.engine.context_tokens} is too small for "
                f"{self.max_output_tokens} output tokens (raise AIPP_LLM_CONTEXT_TOKENS)"
            )
        return budget

    def split(self, text: str, budget: int) -> list[str]:
        """Pack sentences into chunks of at most ``budget`` tokens (words if a sentence is huge)."""
        pieces: list[str] = []
        for sentence in _SENTENCE_END.split(text):
            pieces.extend(self._pieces(sentence, budget))
        chunks: list[str] = []
        current: list[str] = []
        used = 0
        for piece in pieces:
            n = self.engine.count_tokens(piece) + 1
            if current and used + n > budget:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(piece)
            used += n
        if current:
            chunks.append(" ".join(current))
        return chunks

    def _pieces(self, text: str, budget: int) -> list[str]:
        n = self.engine.count_tokens(text)
        if n <= budget:
            return [text]
        words = text.split()
        step = max(1, len(words) * budget // (2 * n))
        return [" ".join(words[i : i + step]) for i in range(0, len(words), step)]

    def chunk(
        self, segs: list[Seg], budget: int, max_span_s: float | None = None
    ) -> list[list[Seg]]:
        """Consecutive segments that fit ``budget`` (and ``max_span_s``), overlapping by one."""
        units: list[tuple[Seg, int]] = []
        for s in segs:  # a segment bigger than a chunk is cut into word pieces, same id
            for piece in self._pieces(s.text, budget // 2):
                units.append((Seg(s.id, s.start, s.end, piece, s.speaker), 0))
        units = [(u, self._tokens(u)) for u, _ in units]
        chunks: list[list[Seg]] = []
        current: list[tuple[Seg, int]] = []
        carry: list[tuple[Seg, int]] = []
        used = 0
        for unit, n in units:
            span_full = (
                max_span_s is not None
                and current
                and unit.end is not None
                and current[0][0].start is not None
                and unit.end - current[0][0].start > max_span_s
            )
            if current and (used + n > budget or span_full):
                chunks.append([u for u, _ in current])
                carry = current[-OVERLAP_SEGMENTS:] if OVERLAP_SEGMENTS else []
                if sum(c for _, c in carry) + n > budget // 2:
                    carry = []
                current, used = list(carry), sum(c for _, c in carry)
            current.append((unit, n))
            used += n
        if current and (not chunks or len(current) > OVERLAP_SEGMENTS):
            chunks.append([u for u, _ in current])
            new_text = sum(n for _, n in current[len(carry) :])
            if len(chunks) > 1 and len(carry) == OVERLAP_SEGMENTS and new_text < budget // 4:
                chunks[-2:] = _rebalance(*chunks[-2:], budget, max_span_s, self._tokens)
        return chunks

    def _tokens(self, seg: Seg) -> int:
        """Tokens of a segment as the model sees it: numbered lines, counted here from 1,
        so each line gets two tokens of room for the longer number it has in its chunk."""
        return self.engine.count_tokens(render_lines([seg])) + 2 * len(number_lines([seg])) + 1

    # -- one call ---------------------------------------------------------------------

    def _generate(self, messages: list[dict], schema: dict, temperature: float, stats):
        completion = self.engine.generate(
            messages, max_tokens=self.max_output_tokens, temperature=temperature, json_schema=schema
        )
        stats.calls += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        return parse_json(completion.text)

    def _attempt(
        self,
        segs: list[Seg],
        index: TranscriptIndex,
        instruction: str | None,
        stats: SummaryStats,
        *,
        title: bool,
        retry_problems: list[str] | None,
    ) -> tuple[Part, list[str]]:
        lines = []
        if instruction:
            lines.append(instruction)
        start, end = _span(segs)
        if start is not None and end is not None:
            lines.append(f"This part covers {_clock(start)} to {_clock(end)} of the recording.")
        if retry_problems:
            lines.append(RETRY_HINT.format(problems=", ".join(retry_problems)))
        numbered = number_lines(segs)
        lines.append("Transcript:\n" + "\n".join(render_line(x) for x in numbered))
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": "\n\n".join(lines)},
        ]
        retry = retry_problems is not None
        schema = grounded_schema(3 if retry else MAX_POINTS, 3 if retry else MAX_ACTIONS, title)
        temperature = max(self.temperature, RETRY_TEMPERATURE) if retry else self.temperature
        data = self._generate(messages, schema, temperature, stats)
        part = ground_answer(data, index, stats, numbered)
        part.start, part.end = start, end
        part.method = "llm_retry" if retry else "llm"
        proposed = len(data.get("key_points") or []) if isinstance(data, dict) else 0
        found = checks.problems(
            part.summary, [p.text for p in part.points], [a.text for a in part.actions], index
        )
        if proposed and not part.points:
            found.append("ungrounded_points")
        return part, found

    def _summarize_part(
        self,
        segs: list[Seg],
        index: TranscriptIndex,
        instruction: str | None,
        stats: SummaryStats,
        title: bool = False,
    ) -> Part:
        """First try; one retry with another prompt and temperature; then extractive."""
        part, found = self._attempt(
            segs, index, instruction, stats, title=title, retry_problems=None
        )
        if not found:
            return with_extractive_points(part, segs, index)
        stats.retries += 1
        part, found = self._attempt(
            segs, index, instruction, stats, title=title, retry_problems=found
        )
        if not found:
            return with_extractive_points(part, segs, index)
        fallback = extractive_part(segs, index)
        fallback.actions = part.actions  # verified: grounded and a commitment
        return fallback

    # -- the whole transcript ---------------------------------------------------------

    def summarize(
        self,
        transcript_text: str,
        instruction: str | None = None,
        segments: list | None = None,
        duration_s: float | None = None,
    ) -> SummarizeOutput:
        """Summarize ``segments`` (ids, timestamps) when given, else the sentences of the text."""
        t0 = time.perf_counter()
        stats = SummaryStats()
        segs = segments_from_dicts(segments) if segments else []
        if not segs:
            segs = segments_from_text(transcript_text)
        chunks = 1
        if not segs:
            summary = NO_SPEECH
        else:
            index = TranscriptIndex(segs)
            start, end = _span(segs)
            if duration_s is None and start is not None and end is not None:
                duration_s = end
            want_chapters = duration_s is not None and duration_s >= self.chapters_min_s
            budget = self.input_budget(instruction)
            rendered = render_lines(segs)
            if self.engine.count_tokens(rendered) <= budget and not want_chapters:
                summary = to_summary(self._summarize_part(segs, index, instruction, stats))
            else:
                span = self.chapter_target_s if want_chapters else None
                parts_segs = self.chunk(segs, budget, span)
                chunks = len(parts_segs)
                parts = [
                    self._summarize_part(p, index, instruction, stats, title=want_chapters)
                    for p in parts_segs
                ]
                summary = self._merge(parts, segs, index, instruction, stats)
                if want_chapters:
                    summary.chapters = chapters_for(parts, parts_segs)
        return SummarizeOutput(
            summary=summary,
            summarize_s=round(time.perf_counter() - t0, 4),
            model=self.engine.model_name,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            chunks=chunks,
            retries=stats.retries,
            dropped_items=stats.dropped,
            repaired_items=stats.repaired,
        )

    # -- reduce -----------------------------------------------------------------------

    def _merge(
        self,
        parts: list[Part],
        segs: list[Seg],
        index: TranscriptIndex,
        instruction: str | None,
        stats: SummaryStats,
    ) -> Summary:
        points = pick_round_robin([p.points for p in parts], MAX_MERGED_POINTS)
        actions = dedup([a for p in parts for a in p.actions])[:MAX_MERGED_ACTIONS]
        text, method = self._reduce_text(parts, segs, index, instruction, stats, points, actions)
        if method != "extractive_fallback":
            methods = {p.method for p in parts} | {method}
            if methods & {"extractive_fallback", EXTRACTIVE_POINTS}:
                method = EXTRACTIVE_POINTS
            elif "llm_retry" in methods:
                method = "llm_retry"
        out = Summary(
            summary=text,
            key_points=[p.text for p in points],
            action_items=[a.text for a in actions],
            key_points_evidence=[p.evidence for p in points],
            action_items_evidence=[a.evidence for a in actions],
            method=method,
        )
        return out

    def _reduce_text(self, parts, segs, index, instruction, stats, points, actions):
        """One summary text from the parts' summaries (grouped until they fit one call)."""
        texts = [
            f"Part {i} ({_clock(p.start or 0)}-{_clock(p.end or 0)}): {p.summary}"
            for i, p in enumerate(parts, 1)
        ]
        system = REDUCE_SYSTEM_PROMPT + (f" {instruction}" if instruction else "")
        budget = self.input_budget(system)
        hint: list[str] | None = None
        for attempt in range(2):
            rows = list(texts)
            while self.engine.count_tokens("\n".join(rows)) > budget and len(rows) > 1:
                groups = self.split("\n".join(rows), budget)
                if len(groups) >= len(rows):  # cannot shrink by grouping; keep first sentences
                    rows = [extractive.first_sentence(r) for r in rows]
                    if self.engine.count_tokens("\n".join(rows)) > budget:
                        rows = self.split("\n".join(rows), budget)[:1]
                    break
                rows = [self._reduce_call(system, g, stats, attempt, hint) for g in groups]
            text = self._reduce_call(system, "\n".join(rows), stats, attempt, hint)
            found = checks.problems(
                text, [p.text for p in points], [a.text for a in actions], index
            )
            if not found:
                return text, "llm" if attempt == 0 else "llm_retry"
            if attempt == 0:
                stats.retries += 1
            hint = found
        central = extractive.central_segments(segs, 3)
        return " ".join(s.text for s in central), "extractive_fallback"

    def _reduce_call(self, system, text, stats, attempt, hint) -> str:
        user = (RETRY_HINT.format(problems=", ".join(hint)) + "\n\n" if hint else "") + text
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        temperature = self.temperature if attempt == 0 else max(self.temperature, RETRY_TEMPERATURE)
        data = self._generate(messages, REDUCE_SCHEMA, temperature, stats)
        return trim_summary(str(data.get("summary") or "")) if isinstance(data, dict) else ""


def render_line(line: Line) -> str:
    speaker = line.seg.speaker
    return f"[{line.n}] {speaker}: {line.text}" if speaker else f"[{line.n}] {line.text}"


def render_lines(segs: list[Seg]) -> str:
    return "\n".join(render_line(x) for x in number_lines(segs))


def _span(segs: list[Seg]) -> tuple[float | None, float | None]:
    starts = [s.start for s in segs if s.start is not None]
    ends = [s.end for s in segs if s.end is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def parse_json(text: str) -> dict:
    """The model's JSON, repaired if ``max_tokens`` cut it off; {} if it is not JSON."""
    for candidate in (text, _close_json(text)):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        return data if isinstance(data, dict) else {}
    return {}


def ground_answer(
    data: dict, index: TranscriptIndex, stats: SummaryStats, lines: list[Line] | None = None
) -> Part:
    """Keep the items a transcript line supports; repair a miscounted citation, drop the rest.

    ``lines``: the numbered lines the model saw; its items cite them by ``line``. An item
    that quotes instead (``quote``) is grounded on the quote.
    """
    part = Part(
        summary=trim_summary(str(data.get("summary") or "")), title=str(data.get("title") or "")
    )
    by_number = {x.n: x for x in lines or []}
    for kind, label in (("key_points", "point"), ("action_items", "task")):
        items = data.get(kind)
        for raw in items if isinstance(items, list) else []:
            if not isinstance(raw, dict):
                stats.dropped += 1
                continue
            text = extractive.first_sentence(str(raw.get(label) or "").strip(), MAX_ITEM_WORDS)
            is_action = kind == "action_items"
            cited = raw.get("line")
            if isinstance(cited, int) and by_number:
                evidence, repaired = _ground_on_lines(text, cited, by_number, index, is_action)
            else:
                evidence, repaired = _ground_on_quote(raw, text, index)
            if evidence is None or (is_action and not has_commitment(evidence.quote)):
                stats.dropped += 1
                continue
            if len(normalize(text).split()) < 2:  # one-word text: the quote says more
                text = evidence.quote
            if not is_action and len(content_words(text)) < MIN_POINT_WORDS:  # "Make sense."
                stats.dropped += 1
                continue
            stats.repaired += int(repaired)
            (part.actions if is_action else part.points).append(Item(text, evidence))
    part.points = dedup(part.points)
    part.actions = dedup(part.actions)
    return part


def _ground_on_lines(
    text: str, cited: int, by_number: dict[int, Line], index: TranscriptIndex, action: bool
) -> tuple[Evidence | None, bool]:
    """The cited line if it supports ``text``, else a neighbour, else the best line found."""
    if not text:
        return None, False

    def usable(line: Line) -> bool:
        return not action or has_commitment(line.text)

    for n in (cited, cited - 1, cited + 1, cited - 2, cited + 2):
        line = by_number.get(n)
        if line and usable(line) and supports(text, line.text):
            return index.line_evidence(line), n != cited
    found = [x for x in by_number.values() if usable(x) and supports(text, x.text, strict=True)]
    if found:
        best = max(found, key=lambda x: (len(content_words(text) & content_words(x.text)), -x.n))
        return index.line_evidence(best), True
    return None, False


def _ground_on_quote(raw: dict, text: str, index: TranscriptIndex):
    quote = str(raw.get("quote") or "").strip()
    near = raw.get("segment") if isinstance(raw.get("segment"), int) else None
    evidence, repaired = index.ground(quote, near) if quote else (None, False)
    if evidence is None and text:  # the model may have put the quote in the text
        evidence, repaired = index.ground(text, near)
    return evidence, repaired


def trim_summary(text: str, max_sentences: int = 5) -> str:
    """Cut a looping summary at its first repeated sentence, and a cut-off last sentence.

    Greedy decoding of a small model falls into loops ("Diane and Sheila are in Chicago.
    ... Diane and Sheila are in Chicago."); what came before the loop is often usable.
    """
    kept: list[str] = []
    seen: list[set[tuple[str, ...]]] = []
    sentences = [x for x in _SENTENCE_END.split(text.strip()) if x.strip()]
    for n, sentence in enumerate(sentences):
        words = normalize(sentence).split()
        grams = {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
        if any(len(grams & g) > 0.5 * len(grams) for g in seen):
            break
        complete = sentence.rstrip().endswith((".", "!", "?"))
        if not complete and n == len(sentences) - 1 and kept:
            break
        kept.append(sentence.strip())
        seen.append(grams)
        if len(kept) == max_sentences:
            break
    return " ".join(kept)


def _words(text: str) -> set[str]:
    return set(normalize(text).split())


def _same(a: Item, b: Item) -> bool:
    """Two items say the same thing: same text, or overlapping evidence with similar words."""
    wa, wb = _words(a.text), _words(b.text)
    jaccard = len(wa & wb) / max(1, len(wa | wb))
    shared_segments = set(a.evidence.segments) & set(b.evidence.segments)
    return (
        jaccard >= 0.6
        or normalize(a.evidence.quote) == normalize(b.evidence.quote)
        or (bool(shared_segments) and jaccard >= 0.3)
    )


def dedup(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if not any(_same(item, kept) for kept in out):
            out.append(item)
    return out


def pick_round_robin(groups: list[list[Item]], limit: int) -> list[Item]:
    """Take items chunk by chunk in turn, so a long recording's later parts are represented."""
    out: list[Item] = []
    depth = 0
    while len(out) < limit and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(out) < limit and not any(_same(g[depth], k) for k in out):
                out.append(g[depth])
        depth += 1
    out.sort(key=lambda i: (i.evidence.start or 0.0, i.evidence.segments[:1]))
    return out


def extractive_part(segs: list[Seg], index: TranscriptIndex) -> Part:
    """Central sentences as summary and key points; every one is its own evidence."""
    central = extractive.central_segments(segs, MAX_POINTS)
    points = []
    for s in central:
        span = index.find(s.text, near=s.id)
        evidence = index.evidence(span) if span else None
        if evidence:
            points.append(Item(extractive.first_sentence(s.text), evidence))
    # The summary: the three most central sentences of all, in transcript order.
    summary = " ".join(s.text for s in extractive.central_segments(segs, 3))
    start, end = _span(segs)
    # No title: the chapter takes the chunk's keywords (a sentence start names no topic).
    return Part(summary, points, [], "", "extractive_fallback", start, end)


def with_extractive_points(part: Part, segs: list[Seg], index: TranscriptIndex) -> Part:
    """Fill a part the model left (nearly) without grounded points with central sentences.

    A small model often answers ``key_points: []`` for a long chunk, or cites lines that
    do not back its points; a reader still needs the chunk's main points. The part's
    method says so.
    """
    if len(part.points) >= MIN_POINTS:
        return part
    extra = [p for p in extractive_part(segs, index).points if p.text]
    filled = dedup(part.points + extra)[: max(MIN_POINTS + 1, len(part.points))]
    if len(filled) > len(part.points):
        part.points = sorted(filled, key=lambda i: (i.evidence.start or 0.0, i.evidence.segments))
        part.method = EXTRACTIVE_POINTS
    return part


def to_summary(part: Part) -> Summary:
    return Summary(
        summary=part.summary,
        key_points=[p.text for p in part.points],
        action_items=[a.text for a in part.actions],
        key_points_evidence=[p.evidence for p in part.points],
        action_items_evidence=[a.evidence for a in part.actions],
        method=part.method,
    )


_PROMPTS = f" {normalize(GROUNDED_SYSTEM_PROMPT + ' ' + REDUCE_SYSTEM_PROMPT)} "


def _rebalance(
    before: list[Seg], last: list[Seg], budget: int, max_span_s: float | None, tokens
) -> list[list[Seg]]:
    """Split the last two chunks evenly, so a few seconds of goodbyes are not a chapter.

    Seen on 43 minutes of calls: a 5-second last chunk became the chapter "Thanks".
    Keeps the two chunks as they were when an even split would not fit.
    """
    units = before + last[OVERLAP_SEGMENTS:]
    counts = [tokens(s) for s in units]
    half, used, cut = sum(counts) / 2, 0, len(units)
    for i, n in enumerate(counts):
        if used + n > half and i > OVERLAP_SEGMENTS:
            cut = i
            break
        used += n
    split = [units] if cut == len(units) else [units[:cut], units[cut - OVERLAP_SEGMENTS :]]
    for part in split:
        start, end = _span(part)
        too_long = max_span_s is not None and None not in (start, end) and end - start > max_span_s
        if too_long or sum(tokens(s) for s in part) > budget:
            return [before, last]
    return split


def names_a_topic(title: str) -> bool:
    """Not generic ("Meeting Summary"), not one word, not meta, not the prompt echoed back.

    Seen from the 0.5B model: "2 to 6 words naming the topic the", "Thanks".
    """
    words = normalize(title).split()
    if len(words) < 2 or not content_words(title) - GENERIC_TITLE_WORDS:
        return False
    echo = any(f" {' '.join(words[i : i + 3])} " in _PROMPTS for i in range(len(words) - 2))
    return not echo and not checks.is_meta(title)


def chapters_for(parts: list[Part], parts_segs: list[list[Seg]]) -> list[Chapter]:
    """One chapter per chunk: the model's title if it names a topic, else the chunk's keywords."""
    keywords = extractive.chunk_keywords(parts_segs)
    out = []
    for number, (part, words) in enumerate(zip(parts, keywords, strict=True), 1):
        if part.start is None:
            continue
        gist = extractive.first_sentence(part.summary)
        title = " ".join(part.title.split()[:8])
        if not names_a_topic(title):
            title = ", ".join(words).capitalize() if words else ""
        title = title or " ".join(gist.split()[:6]) or f"Part {number}"
        out.append(Chapter(start=part.start, end=part.end or part.start, title=title, gist=gist))
    return out


def parse_summary(text: str) -> Summary:
    """Grammar-constrained output parses; a cut-off one (max tokens) is repaired, not fatal."""
    try:
        data = Summary.model_validate_json(text).model_dump()
    except ValidationError:
        try:
            data = json.loads(_close_json(text))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            return Summary(summary=text.strip()[:2000], key_points=[], action_items=[])
    return Summary(
        summary=str(data.get("summary", "")).strip(),
        key_points=_unique(data.get("key_points", [])),
        action_items=_unique(data.get("action_items", [])),
    )


def _unique(items) -> list[str]:
    """Drop blanks and repeats: small models like to say the same thing twice."""
    seen: set[str] = set()
    out: list[str] = []
    for item in items if isinstance(items, list) else []:
        text = str(item).strip()
        key = text.lower().rstrip(".")
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def _close_json(text: str) -> str:
    """Close the strings, arrays and objects a truncated JSON document left open."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    closing = ('"' if in_string else "") + "".join(reversed(stack))
    return text.rstrip().rstrip(",") + closing
