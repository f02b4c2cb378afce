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

This module is the orchestration: budgets, calls, retries, map and reduce. The prompts
and schemas are in :mod:`app.llm.prompts`, the reading and checking of an answer in
:mod:`app.llm.answers`, chunks and chapters in :mod:`app.llm.chunking`; their names stay
importable from here, which callers and tests use.
"""

from __future__ import annotations

import re
import time

from app.core.schemas import SummarizeOutput, Summary
from app.llm import checks, extractive
from app.llm.answers import (
    EXTRACTIVE_POINTS,
    MAX_ITEM_WORDS,
    MIN_POINT_WORDS,
    MIN_POINTS,
    NO_SPEECH,
    Item,
    Part,
    SummaryStats,
    dedup,
    extractive_part,
    ground_answer,
    parse_json,
    parse_summary,
    pick_round_robin,
    points_from_summary,
    summary_of,
    supported_sentences,
    to_summary,
    trim_summary,
    with_extractive_points,
    without_label,
    word_overlap,
)
from app.llm.answers import SENTENCE_END as _SENTENCE_END  # noqa: F401 (its old name here)
from app.llm.answers import _close_json as _close_json
from app.llm.answers import _ground_on_lines as _ground_on_lines
from app.llm.answers import _ground_on_quote as _ground_on_quote
from app.llm.answers import _same as _same
from app.llm.answers import _unique as _unique
from app.llm.answers import _words as _words
from app.llm.chunking import _PROMPTS as _PROMPTS
from app.llm.chunking import (
    CHAPTER_TARGET_S,
    CHAPTERS_MIN_S,
    GENERIC_TITLE_WORDS,
    OVERLAP_SEGMENTS,
    chapters_for,
    chunk_segments,
    names_a_topic,
    segment_tokens,
    split_text,
)
from app.llm.chunking import _rebalance as _rebalance
from app.llm.engines import LLMEngine
from app.llm.grounding import (
    Seg,
    TranscriptIndex,
    normalize,
    number_lines,
    segments_from_dicts,
    segments_from_text,
)
from app.llm.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    GROUNDED_SYSTEM_PROMPT,
    MAX_ACTIONS,
    MAX_POINTS,
    REDUCE_SCHEMA,
    REDUCE_SYSTEM_PROMPT,
    RETRY_HINT,
    grounded_schema,
    render_line,
    render_lines,
    restate_messages,
)
from app.llm.prompts import clock as _clock
from app.llm.prompts import time_span as _span
from app.llm.topics import segment_topics
from app.llm.voice import before_the_speakers_words, speaks_as_a_speaker

# What callers import from here; the names live in the modules above. The private helpers
# imported ``as`` themselves stay importable too (tests reach for some of them).
__all__ = [
    "CHAPTER_TARGET_S",
    "CHAPTERS_MIN_S",
    "DEFAULT_SYSTEM_PROMPT",
    "EXTRACTIVE_POINTS",
    "GENERIC_TITLE_WORDS",
    "GROUNDED_SYSTEM_PROMPT",
    "MAX_ACTIONS",
    "MAX_ITEM_WORDS",
    "MAX_MERGED_ACTIONS",
    "MAX_MERGED_POINTS",
    "MAX_POINTS",
    "MIN_POINT_WORDS",
    "MIN_POINTS",
    "NO_SPEECH",
    "OVERLAP_SEGMENTS",
    "REDUCE_SCHEMA",
    "REDUCE_SYSTEM_PROMPT",
    "RETRY_HINT",
    "RETRY_TEMPERATURE",
    "Item",
    "Part",
    "SummaryStats",
    "TranscriptSummarizer",
    "chapters_for",
    "dedup",
    "extractive_part",
    "ground_answer",
    "grounded_schema",
    "names_a_topic",
    "parse_json",
    "parse_summary",
    "pick_round_robin",
    "render_line",
    "render_lines",
    "to_summary",
    "trim_summary",
    "with_extractive_points",
]

_SENTENCES = re.compile(r"(?<=[.!?])\s+")
MAX_MERGED_POINTS = 8
REPEAT_JACCARD = 0.6  # a key point sharing this share of words with a summary sentence
MAX_MERGED_ACTIONS = 10
RETRY_TEMPERATURE = 0.7
SHORT_LINES = 2  # a transcript this short needs no key points of its own
RESTATE_TOKENS = 160  # one or two sentences
RESTATE_SHORT_LINES = 6  # a clip this short is said again if any summary sentence quotes
RESTATE_REPEAT_NGRAM = 4  # a restatement that says a 4-gram twice contradicts itself
_NEGATION = re.compile(r"\b(?:not|never|no|don't|doesn't|didn't|won't|can't|isn't)\b", re.I)
_CONTRAST = re.compile(
    r"\b(?:not|never|no|rather than|instead|but|without|against|n't)\b|n't\b", re.I
)


def points_beyond(text: str, written: list[list[Item]], points: list[Item]) -> list[Item]:
    """The written points that say more than the summary, when at least two do.

    A topic's points are often its own summary sentences (:func:`points_from_summary`),
    and the joined summary opens with the same sentences: four of five key points of an
    AMI meeting repeated the paragraph above them word for word.
    """
    said = [x for x in _SENTENCES.split(text) if x.strip()]

    def repeats(item: Item) -> bool:
        return any(word_overlap(item.text, x) >= REPEAT_JACCARD for x in said)

    fresh = pick_round_robin([[p for p in g if not repeats(p)] for g in written], MAX_MERGED_POINTS)
    return fresh if text and len(fresh) >= MIN_POINTS else points


class TranscriptSummarizer:
    """Map-reduce over one transcript with one engine: budgets, calls, checks, retries."""

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
        return split_text(text, budget, self.engine.count_tokens)

    def chunk(
        self, segs: list[Seg], budget: int, max_span_s: float | None = None
    ) -> list[list[Seg]]:
        """Consecutive segments that fit ``budget`` (and ``max_span_s``), overlapping by one."""
        return chunk_segments(segs, budget, max_span_s, self.engine.count_tokens)

    def _tokens(self, seg: Seg) -> int:
        """Tokens of a segment as the model sees it (:func:`~app.llm.chunking.segment_tokens`)."""
        return segment_tokens(seg, self.engine.count_tokens)

    def _parts(self, segs: list[Seg], budget: int, by_topic: bool) -> list[list[Seg]]:
        """Topics (cohesion dips, :mod:`app.llm.topics`) when chapters are wanted, else chunks.

        A topic that still does not fit one call (one huge segment) is chunked as before.
        """
        if not by_topic:
            return self.chunk(segs, budget)
        topics = segment_topics(segs, self.chapter_target_s, budget, self._tokens)
        out: list[list[Seg]] = []
        for t in topics:
            fits = sum(self._tokens(s) for s in t) <= budget
            out += [t] if fits else self.chunk(t, budget)
        return out

    # -- one call ---------------------------------------------------------------------

    def _generate(self, messages: list[dict], schema: dict, temperature: float, stats):
        text = self._call(messages, self.max_output_tokens, temperature, stats, schema)
        return parse_json(text)

    def _call(self, messages, max_tokens, temperature, stats, schema=None) -> str:
        """One engine call, counted in ``stats``; its text."""
        completion = self.engine.generate(
            messages, max_tokens=max_tokens, temperature=temperature, json_schema=schema
        )
        stats.calls += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        return completion.text

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
        # A clip of a line or two has no points beyond its lines: the summary says it.
        if proposed and not part.points and not part.copied and len(numbered) > SHORT_LINES:
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
            return self._written_points(part, segs, index)
        stats.retries += 1
        if len(segs) <= RESTATE_SHORT_LINES and not title:
            restated = self._restatement(segs, index, instruction, stats)
            if restated:  # the failed answer's points go with it; its actions were verified
                part.summary, part.points, part.method = restated, [], "llm_retry"
                return self._written_points(part, segs, index)
        part, found = self._attempt(
            segs, index, instruction, stats, title=title, retry_problems=found
        )
        if not found:
            return self._written_points(part, segs, index)
        fallback = extractive_part(segs, index)
        fallback.actions = part.actions  # verified: grounded and a commitment
        return fallback

    @staticmethod
    def _written_points(part: Part, segs: list[Seg], index: TranscriptIndex) -> Part:
        """Too few points of its own: the part's checked summary sentences, grounded."""
        if len(part.points) >= MIN_POINTS:
            return part
        return points_from_summary(part, number_lines(segs), index)

    def _restated(
        self,
        part: Part,
        segs: list[Seg],
        index: TranscriptIndex,
        instruction: str | None,
        stats: SummaryStats,
    ) -> Part:
        """A summary that mostly quotes the speakers, said again in reported speech.

        The new text replaces it only when it passes every check and quotes less; the
        points then come from its sentences where the model's own were copies.
        """
        lost = self._lost_negation(part.summary, segs)
        quotes = self._quotes(part.summary, segs, index)
        if part.method == "extractive_fallback" or not (quotes or lost):
            return part
        text = self._restatement(segs, index, instruction, stats)
        if not text:
            return part
        old = normalize(part.summary)  # points taken from the quoting summary go with it
        part.points = [p for p in part.points if normalize(p.text) not in old]
        part.summary = text
        return self._written_points(part, segs, index)

    def _restatement(
        self, segs: list[Seg], index: TranscriptIndex, instruction: str | None, stats
    ) -> str:
        """The clip said again in reported speech, if that passes every check; "" if not.

        Cheaper than a second JSON answer (one or two sentences), and what a clip of a few
        lines needs: the JFK clip, in tiny.en's two lines, failed both JSON attempts (each
        summary invented "economic development, infrastructure" and was dropped) and fell
        back to his first line; its restatement was right in 4 s on 2 cores.
        """
        said = self._call(
            restate_messages(segs, instruction), RESTATE_TOKENS, self.temperature, stats
        )
        text, _ = supported_sentences(trim_summary(said.strip()), index)
        if (
            not text
            or checks.problems(text, [], [], index)
            or checks.quoted_share(text, index) > checks.MAX_QUOTED_SHARE
            or checks.ngram_repeat_rate([text], RESTATE_REPEAT_NGRAM) > 0
            or self._lost_negation(text, segs)
        ):  # "... ask what they can do for their country rather than what they can do ..."
            return ""
        return text

    @staticmethod
    def _lost_negation(summary: str, segs: list[Seg]) -> bool:
        """A clip of a few lines says "not", and its summary says no "not", "rather than",
        "instead" or "but": the meaning may have turned over.

        Seen from the 0.5B model on the JFK clip ("ask not what your country can do for
        you, ask what you can do for your country"): "The speakers discuss the topic of
        asking what countries can do for them, asking what they can do for their country."
        """
        if len(segs) > RESTATE_SHORT_LINES:
            return False
        said = " ".join(s.text for s in segs)
        return bool(_NEGATION.search(said)) and not _CONTRAST.search(summary)

    @staticmethod
    def _quotes(summary: str, segs: list[Seg], index: TranscriptIndex) -> bool:
        """Mostly the speakers' words; in a clip of a few lines, any sentence that is."""
        if checks.quoted_share(summary, index) > checks.MAX_QUOTED_SHARE:
            return True
        if len(segs) > RESTATE_SHORT_LINES:
            return False
        sentences = _SENTENCES.split(summary.strip())
        return any(checks.quoted_share(x, index) > checks.MAX_QUOTED_SHARE for x in sentences)

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
                part = self._summarize_part(segs, index, instruction, stats)
                part = self._restated(part, segs, index, instruction, stats)
                if not part.points:  # every point copied a line: central lines, labelled
                    part = with_extractive_points(part, segs, index)
                summary = to_summary(part)
            else:
                parts_segs = self._parts(segs, budget, want_chapters)
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
        # A topic the model failed on offers central lines as points: verbatim copies,
        # which belong to the transcript's highlights. Written points come first.
        written = [p.points for p in parts if p.method != "extractive_fallback"]
        points = pick_round_robin(written, MAX_MERGED_POINTS)
        actions = dedup([a for p in parts for a in p.actions])[:MAX_MERGED_ACTIONS]
        text, method = self._joined_text(parts, index, points, actions)
        points = points_beyond(text, written, points)
        if len(points) < MIN_POINTS and text:  # the joined summary's sentences, on their lines
            whole = points_from_summary(Part(text, list(points)), number_lines(segs), index)
            points = whole.points[:MAX_MERGED_POINTS]
        filled = not points
        if filled:  # still none: central lines, labelled
            points = pick_round_robin([p.points for p in parts], MAX_MERGED_POINTS)
            points = points or extractive_part(segs, index).points[: MIN_POINTS + 1]
            text, method = self._joined_text(parts, index, points, actions)
        if not text:
            text, method = self._reduce_text(
                parts, segs, index, instruction, stats, points, actions
            )
        if method != "extractive_fallback":
            methods = {p.method for p in parts} | {method}
            lines_given = {
                id(i) for p in parts if p.method == "extractive_fallback" for i in p.points
            }
            if filled or method == EXTRACTIVE_POINTS or any(id(i) in lines_given for i in points):
                method = EXTRACTIVE_POINTS
            elif methods & {"llm_retry", "extractive_fallback"}:  # a topic lost its retry
                method = "llm_retry"
        return summary_of(text, points, actions, method)

    def _joined_text(self, parts, index, points, actions) -> tuple[str, str]:
        """The topics' own checked summaries in order: the length follows the meeting.

        A reduce call of the 0.5B model shrank a 23-minute meeting to "Designing a remote
        control."; each topic's summary already passed the checks. One or two sentences
        a topic (one when there are many), checked again as a whole; "" to reduce instead.
        """
        per = 2 if len(parts) <= 4 else 1
        texts = [
            " ".join(_SENTENCES.split(p.summary.strip())[:per])
            for p in parts
            if p.method in {"llm", "llm_retry"} and p.summary.strip()
        ]
        if len(texts) < max(1, len(parts) // 2):
            return "", ""
        seen: set[str] = set()  # two topics' summaries often open with the same sentence
        sentences = [x for t in texts for x in _SENTENCES.split(t)]
        sentences = [x for x in sentences if not (x.lower() in seen or seen.add(x.lower()))]
        text = " ".join(self._own_words(sentences, index))
        if checks.problems(text, [p.text for p in points], [a.text for a in actions], index):
            return "", ""
        return text, "llm"

    @staticmethod
    def _own_words(sentences: list[str], index: TranscriptIndex) -> list[str]:
        """The sentences that are neither a speaker's line quoted behind a label nor in a
        speaker's voice, if two are left.

        Seen in the joined topic summaries of AMI meetings: "Marketing: Just put it on the
        deskt desktop.", "So, this is our first meeting of this design project.", "I'll
        ask the user to confirm …". A meeting's summary reports what was said; the quote is
        in the transcript. A sentence that runs on into a speaker's words keeps the report
        before them; "we" in a report was already said as "they". A question is a
        speaker's, too. All stay when fewer than two sentences would be left: a summary is
        more than one phrase.
        """
        sentences = [before_the_speakers_words(x) or x for x in sentences]
        own = [
            x
            for x in sentences
            if not speaks_as_a_speaker(x)
            and not x.rstrip().endswith("?")  # "Project Manager: Why are trends so important?"
            and without_label(x) == x
        ]
        return own if len(own) >= min(2, len(sentences)) else sentences

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
