"""Transcripts as a meeting tool exports them, made from a real meeting's IRC log.

``tests/data/transcripts/w3c_ccg_traceability_2022-08-09.irc.log`` (tests/data/SOURCES.md)
holds a real call, line by line with timestamps; the transcriber bot's lines are the
speech (``Name: text``). :func:`turns` reads them as speaker turns; :func:`to_vtt_file`
and :func:`to_json_turns` write the two shapes users upload.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

IRC_LOG = (
    Path(__file__).resolve().parent
    / "data"
    / "transcripts"
    / "w3c_ccg_traceability_2022-08-09.irc.log"
)
_LINE = re.compile(r"^\[(?P<at>[^\]]+)\]\t<Transcriber>\t(?P<speaker>[^:]{1,120}): (?P<text>.+)$")


def _speaker(raw: str) -> str:
    """``Ben_-_Transmute`` -> ``Ben``; ``TallTed_//_Ted_Thibodeau_(...)`` -> ``TallTed``."""
    return re.split(r"_|\(", raw, maxsplit=1)[0] or raw


def turns(until_s: float | None = None) -> list[dict]:
    """``[{speaker, text, start, end}]`` in seconds from the first spoken line."""
    rows = []
    for line in IRC_LOG.read_text().splitlines():
        m = _LINE.match(line)
        if m is None or m["speaker"] == "Meeting":  # the bot's own header line
            continue
        at = datetime.fromisoformat(m["at"].replace("Z", "+00:00")).timestamp()
        rows.append((at, _speaker(m["speaker"]), m["text"].strip()))
    t0 = rows[0][0]
    out = []
    for i, (at, speaker, text) in enumerate(rows):
        start = round(at - t0, 3)
        end = round(rows[i + 1][0] - t0, 3) if i + 1 < len(rows) else start + 5.0
        if until_s is not None and start >= until_s:
            break
        out.append({"speaker": speaker, "text": text, "start": start, "end": max(end, start)})
    return out


def _stamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def to_vtt_file(rows: list[dict], path: Path) -> Path:
    cues = [
        f"{_stamp(r['start'])} --> {_stamp(r['end'])}\n<v {r['speaker']}>{r['text']}" for r in rows
    ]
    path.write_text("WEBVTT\n\n" + "\n\n".join(cues) + "\n")
    return path


def to_json_turns(rows: list[dict], path: Path, *, with_times: bool = True) -> Path:
    keep = ("speaker", "text", "start", "end") if with_times else ("speaker", "text")
    path.write_text(json.dumps([{k: r[k] for k in keep} for r in rows], indent=1))
    return path
