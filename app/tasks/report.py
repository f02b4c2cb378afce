"""A task's result as one Markdown document a person can read and check.

The summary comes first, each key point and action item followed by its evidence (the
time and the transcript words it rests on), then the chapters and the timestamped
transcript, so every claim can be looked up in the same document.

Every piece of text is escaped for Markdown on the way out (issue 30): speaker names,
the title (a filename or URL the client chose) and the model's own words alike, so
none of them can open a link, an image, raw HTML, a heading or a new block. Control
and bidi characters are dropped; only the summary keeps its paragraph breaks.
"""

from __future__ import annotations

import re
from typing import Any

from app.core.safe_text import multi_line
from app.speech.diarize import speaker_names

#: CommonMark's escapable ASCII punctuation that can start markup inside a line: emphasis,
#: code, links (and so images), raw HTML, entities, tables, strikethrough, headings.
_MARKUP = re.compile(r"([\\`*_\[\]<>&|~#])")
#: At the start of a line: a list item, a numbered item, a thematic break or setext rule.
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+[.)])", re.MULTILINE)


def md_inline(text: Any) -> str:
    """One line of plain text as Markdown that renders as exactly that text."""
    return _MARKUP.sub(r"\\\1", " ".join(multi_line(str(text or "")).split("\n")))


def md_block(text: Any) -> str:
    """Plain text with paragraphs (a summary) as Markdown that renders as that text."""
    escaped = _MARKUP.sub(r"\\\1", multi_line(str(text or "")))
    return _LINE_START.sub(_escape_marker, escaped)


def _escape_marker(m: re.Match[str]) -> str:
    marker = m.group(2)  # "1." is escaped as "1\.", a bullet as "\-"
    if marker[0].isdigit():
        return f"{m.group(1)}{marker[:-1]}\\{marker[-1]}"
    return f"{m.group(1)}\\{marker}"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def _items(title: str, items: list[str], evidence: list[dict]) -> list[str]:
    lines = [f"## {title}", ""]
    if not items:
        return lines + ["None.", ""]
    for n, text in enumerate(items):
        ev = evidence[n] if n < len(evidence) else None
        lines.append(f"- {md_inline(text)}")
        if ev:
            lines.append(f"  - [{clock(ev.get('start'))}] “{md_inline(ev.get('quote', ''))}”")
    return lines + [""]


def to_markdown(result: dict[str, Any], title: str = "Transcript and summary") -> str:
    transcript, summary = result["transcript"], result.get("summary") or {}
    out = [f"# {md_inline(title)}", ""]
    if summary:
        out += ["## Summary", "", md_block(summary.get("summary", "")), ""]
        if summary.get("method") in {"extractive_fallback", "llm_extractive_points"}:
            out += [f"_Method: {md_inline(summary['method'])} (central transcript sentences)._", ""]
        out += _items(
            "Key points", summary.get("key_points", []), summary.get("key_points_evidence", [])
        )
        out += _items(
            "Action items",
            summary.get("action_items", []),
            summary.get("action_items_evidence", []),
        )
        if summary.get("chapters"):
            out += ["## Chapters", ""]
            for c in summary["chapters"]:
                span = f"{clock(c['start'])}–{clock(c['end'])}"
                out.append(f"- **{span} {md_inline(c['title'])}**: {md_inline(c['gist'])}")
            out.append("")
    names = speaker_names(transcript)
    out += ["## Transcript", ""]
    for seg in transcript["segments"]:
        who = seg.get("speaker")
        label = f" {md_inline(names.get(who, who))}:" if who else ""
        out.append(f"[{clock(seg.get('start'))}]{label} {md_inline(seg['text'])}  ")
    return "\n".join(out).rstrip() + "\n"
