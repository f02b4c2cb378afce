"""Summaries in the user's language, grounded in the spoken one.

The summary is written and checked in the language that was spoken: grounding
(:mod:`app.llm.grounding`) matches the summary's words against the transcript's, so a
German recording gets a German summary whose evidence quotes are German transcript
lines. When another language is asked for (``summary_language``), the checked summary
is then translated by the LLM, item by item; the evidence stays as it was (quotes in
the spoken language). A translation that does not keep the items' shape falls back to
the checked summary in the spoken language, and ``Summary.language`` says which it is.
"""

from __future__ import annotations

import json

from app.core.languages import language_name
from app.core.schemas import Summary
from app.llm.answers import parse_json

#: How much longer (in words) a translated item may be than its original.
MAX_GROWTH = 3.0


def write_in(language: str | None) -> str | None:
    """The instruction that makes the model write in ``language`` (None for English:
    the prompts are English, so English summaries stay exactly as before)."""
    if not language or language == "en":
        return None
    name = language_name(language).title()
    return (
        f"The transcript is in {name}. Write the title, key points, action items and "
        f"summary in {name}, with the words the speakers used."
    )


def with_instruction(language: str | None, instruction: str | None) -> str | None:
    """The caller's instruction, after the language one."""
    parts = [p for p in (write_in(language), instruction) if p]
    return "\n".join(parts) or None


def _keyed(summary: Summary) -> dict[str, str]:
    """One key per text (``summary``, ``point_1``…, ``action_1``…): the grammar then
    makes the model answer every item, instead of merging or dropping some."""
    body = {"summary": summary.summary}
    body |= {f"point_{i}": p for i, p in enumerate(summary.key_points, start=1)}
    body |= {f"action_{i}": a for i, a in enumerate(summary.action_items, start=1)}
    return body


def translation_messages(summary: Summary, target: str) -> list[dict[str, str]]:
    name = language_name(target).title()
    system = (
        f"You translate texts into {name}. Translate every JSON value into {name}, "
        "keeping the keys, names and numbers. Answer in JSON."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps(_keyed(summary), ensure_ascii=False)},
    ]


def translation_schema(summary: Summary) -> dict:
    keys = list(_keyed(summary))
    return {
        "type": "object",
        "properties": {k: {"type": "string"} for k in keys},
        "required": keys,
        "additionalProperties": False,
    }


def _words(text: str) -> int:
    return len(text.split())


def translated(summary: Summary, raw_text: str, target: str) -> Summary | None:
    """The summary with the translated texts, or None when the answer is not usable:
    not JSON, an item missing, an empty or runaway text, or nothing translated."""
    data = parse_json(raw_text)
    original = _keyed(summary)
    new = {k: str(data.get(k) or "").strip() for k in original}
    for key, old in original.items():
        if not new[key] or _words(new[key]) > MAX_GROWTH * max(_words(old), 4):
            return None
    if new == original:
        return None  # nothing was translated
    return summary.model_copy(
        update={
            "summary": new["summary"],
            "key_points": [new[f"point_{i}"] for i in range(1, len(summary.key_points) + 1)],
            "action_items": [new[f"action_{i}"] for i in range(1, len(summary.action_items) + 1)],
            "language": target,
        }
    )


__all__ = ["translated", "translation_messages", "translation_schema", "with_instruction"]
