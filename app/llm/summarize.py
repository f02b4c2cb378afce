"""Turn a transcript into ``{summary, key_points, action_items}``, whatever its length.

Short transcripts take one schema-constrained call. Longer ones than the
context window allows are split on sentence boundaries, each chunk is
summarized (map), and the partial summaries are summarized again (reduce),
recursively until one call fits.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from pydantic import ValidationError

from app.llm.engines import LLMEngine
from app.core.schemas import SummarizeOutput, Summary, summary_json_schema

DEFAULT_SYSTEM_PROMPT = (
    "You summarize transcripts of recorded speech (meetings, calls, talks). "
    "Answer in JSON with: summary (2-4 sentences), key_points (the main points, short), "
    "action_items (tasks someone must do; empty if none). Use only facts from the transcript."
)
REDUCE_INSTRUCTION = (
    "The text below is a list of summaries of consecutive parts of one long transcript. "
    "Merge them into one summary of the whole."
)
NO_SPEECH = Summary(summary="No speech was detected in the audio.", key_points=[], action_items=[])
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class SummaryStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0


class TranscriptSummarizer:
    def __init__(
        self,
        engine: LLMEngine,
        max_output_tokens: int = 512,
        temperature: float = 0.2,
        system_prompt: str | None = None,
    ) -> None:
        self.engine = engine
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt or DEFAULT_SYSTEM_PROMPT
        self.schema = summary_json_schema()

    # -- budgeting ------------------------------------------------------------------

    def _overhead_tokens(self, instruction: str | None) -> int:
        framing = self.system_prompt + (instruction or "") + "Transcript:\n"
        # Chat template tokens (role markers) add a few dozen tokens per message.
        return self.engine.count_tokens(framing) + 48

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
            if self.engine.count_tokens(sentence) <= budget:
                pieces.append(sentence)
                continue
            words = sentence.split()
            step = max(1, len(words) * budget // (2 * self.engine.count_tokens(sentence)))
            pieces.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
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

    # -- calls ------------------------------------------------------------------------

    def _call(self, text: str, instruction: str | None, stats: SummaryStats) -> Summary:
        user = (f"{instruction}\n\n" if instruction else "") + f"Transcript:\n{text}"
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        ]
        completion = self.engine.generate(
            messages,
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
            json_schema=self.schema,
        )
        stats.calls += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        return parse_summary(completion.text)

    def summarize(self, transcript_text: str, instruction: str | None = None) -> SummarizeOutput:
        t0 = time.perf_counter()
        stats = SummaryStats()
        text = transcript_text.strip()
        chunks = 1
        if not text:
            summary = NO_SPEECH
        else:
            budget = self.input_budget(instruction)
            if self.engine.count_tokens(text) <= budget:
                summary = self._call(text, instruction, stats)
            else:
                parts = self.split(text, budget)
                chunks = len(parts)
                partials = [self._call(p, instruction, stats) for p in parts]
                summary = self._reduce(partials, instruction, stats)
        return SummarizeOutput(
            summary=summary,
            summarize_s=round(time.perf_counter() - t0, 4),
            model=self.engine.model_name,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            chunks=chunks,
        )

    def _reduce(
        self, partials: list[Summary], instruction: str | None, stats: SummaryStats
    ) -> Summary:
        reduce_instruction = REDUCE_INSTRUCTION + (f" {instruction}" if instruction else "")
        budget = self.input_budget(reduce_instruction)
        while True:
            rendered = [render_partial(i, s) for i, s in enumerate(partials, 1)]
            joined = "\n".join(rendered)
            if self.engine.count_tokens(joined) <= budget or len(partials) == 1:
                return self._call(joined, reduce_instruction, stats)
            # Too many partials for one call: reduce them in groups that fit, then again.
            groups = self.split("\n".join(rendered), budget)
            if len(groups) >= len(partials):  # cannot shrink by grouping; keep the gist only
                partials = [
                    Summary(summary=s.summary, key_points=[], action_items=[]) for s in partials
                ]
                continue
            partials = [self._call(g, reduce_instruction, stats) for g in groups]


def render_partial(index: int, summary: Summary) -> str:
    lines = [f"Part {index}: {summary.summary}"]
    lines += [f"- {p}" for p in summary.key_points]
    lines += [f"- Action: {a}" for a in summary.action_items]
    return " ".join(lines) + "."


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
