"""What the model is asked: the prompts, the JSON schemas, the transcript as numbered lines.

Kept apart from the checking of answers (:mod:`app.llm.answers`) and from the
orchestration (:mod:`app.llm.summarize`) so a prompt can be read, and changed, in one place;
the vLLM batch path needs only the flat prompt.
"""

from __future__ import annotations

from app.llm.grounding import Line, Seg, number_lines

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
    "summary: 2-4 sentences in your own words on what the speakers said: who, what, where, "
    "decisions. Only facts stated in the transcript. Do not describe the transcript, the "
    "recording or the meeting itself.\n"
    "key_points: the main points. For each: line (the number of the line it comes from) and "
    "point (one short sentence in your own words: what was proposed, found or decided, "
    "and by whom; never a copy of the line).\n"
    "action_items: ONLY tasks a speaker explicitly commits to or asks someone to do, with "
    'words like "I\'ll", "we will", "let\'s", "need to", "can you". For each: line (the '
    "line with those words) and task (who does what, naming the person when one was named). "
    "Most conversations have no such tasks: then "
    "action_items is []. Never invent tasks."
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

RESTATE_SYSTEM_PROMPT = (
    "You restate what was said in recorded speech in one or two sentences of your own "
    "words, in the third person (the speaker, he, she, they), as a reporter would. Keep the "
    "meaning, including any contrast or negation; do not quote."
)
# One worked example: the 0.5B model turned the JFK line into "The speaker encourages the
# fellow Americans to ask what they can do for their country rather than what the country
# can do for them." with it, and echoed the line (or wrote "The speakers discuss the topic
# of asking what your country can do for you") without it.
RESTATE_EXAMPLE = (
    "Friends, don't think about what the team gives you, think about what you give the team.",
    "The speaker urges the listeners to think about what they give the team rather than "
    "what the team gives them.",
)


def restate_messages(segs: list[Seg], instruction: str | None = None) -> list[dict]:
    """A free-text request to say the transcript again in reported speech."""
    said = " ".join(f"{s.speaker}: {s.text}" if s.speaker else s.text for s in segs)
    example, answer = RESTATE_EXAMPLE
    system = RESTATE_SYSTEM_PROMPT + (f" {instruction}" if instruction else "")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Speech: {example}"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"Speech: {said}"},
    ]


MAX_POINTS = 5
MAX_ACTIONS = 5


def _cited_item(label: str) -> dict:
    """One list item of the grounded schema: the cited line number and the item's text."""
    return {
        "type": "object",
        "properties": {"line": {"type": "integer"}, label: {"type": "string"}},
        "required": ["line", label],
        "additionalProperties": False,
    }


def grounded_schema(max_points: int = MAX_POINTS, max_actions: int = MAX_ACTIONS, title=False):
    """JSON schema for one call; plain enough for llama.cpp's grammar converter.

    ``maxItems`` bounds the lists (a small model loops otherwise); no ``maxLength``
    (it blows llama.cpp's sampler stack), ``max_tokens`` bounds length instead.
    """
    text = {"type": "string"}
    # The summary first: written last, it was lost whenever the items ran out of tokens
    # (9 of 45 topic calls on four AMI meetings ended at max_tokens inside the key
    # points, and the empty summary cost a retry). Cut-off items are repaired or dropped.
    props: dict = {"title": text} if title else {}
    props |= {
        "summary": text,
        "key_points": {"type": "array", "items": _cited_item("point"), "maxItems": max_points},
        "action_items": {"type": "array", "items": _cited_item("task"), "maxItems": max_actions},
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


def render_line(line: Line) -> str:
    speaker = line.seg.speaker
    return f"[{line.n}] {speaker}: {line.text}" if speaker else f"[{line.n}] {line.text}"


def render_lines(segs: list[Seg]) -> str:
    return "\n".join(render_line(x) for x in number_lines(segs))


def time_span(segs: list[Seg]) -> tuple[float | None, float | None]:
    """The first start and last end of ``segs`` (None where no segment has a timestamp)."""
    starts = [s.start for s in segs if s.start is not None]
    ends = [s.end for s in segs if s.end is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
