"""A task's result as one Markdown document a person can read and check.

The summary comes first, each key point and action item followed by its evidence (the
time and the transcript words it rests on), then the chapters and the timestamped
transcript, so every claim can be looked up in the same document.
"""

from __future__ import annotations

from typing import Any

from app.speech.diarize import speaker_names


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
        lines.append(f"- {text}")
        if ev:
            lines.append(f"  - [{clock(ev.get('start'))}] “{ev.get('quote', '')}”")
    return lines + [""]


def to_markdown(result: dict[str, Any], title: str = "Transcript and summary") -> str:
    transcript, summary = result["transcript"], result.get("summary") or {}
    out = [f"# {title}", ""]
    if summary:
        out += ["## Summary", "", summary.get("summary", ""), ""]
        if summary.get("method") in {"extractive_fallback", "llm_extractive_points"}:
            out += [f"_Method: {summary['method']} (central transcript sentences)._", ""]
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
                out.append(f"- **{span} {c['title']}**: {c['gist']}")
            out.append("")
    names = speaker_names(transcript)
    out += ["## Transcript", ""]
    for seg in transcript["segments"]:
        who = seg.get("speaker")
        label = f" {names.get(who, who)}:" if who else ""
        out.append(f"[{clock(seg.get('start'))}]{label} {seg['text'].strip()}  ")
    return "\n".join(out).rstrip() + "\n"
