"""Chapter boundaries against human topic segmentation on every QMSum AMI meeting at hand.

``bench/qmsum.py`` scores summaries, which costs minutes of model time per meeting, so it
runs on a few meetings; boundary F1 on four meetings moves by 0.1 when one boundary
moves. The chapters' boundaries need no model call: they are the summarizer's own parts
(``TranscriptSummarizer._parts``: topics by lexical cohesion, cut again where a topic does
not fit one call), computed here with the bundled model's tokenizer on every AMI meeting
of a split, next to the lexical dips alone (before who-talks shifts) and fixed five-minute
chunks (the code before topics) in the same run.

Meetings: ``bench/data/qmsum/*.json`` and ``bench/data/qmsum/topics_val/*.json`` (all
twenty AMI validation meetings of QMSum; sources in ``bench/data/qmsum/SOURCES.md``).
``--import DIR`` converts the AMI meetings of a QMSum checkout's train and validation
splits into a folder (the test split is refused, as everywhere in this bench).

    python -m bench.qmsum_topics --split val
    python -m bench.qmsum_topics --import ~/QMSum --out /tmp/qmsum_train --split train
    python -m bench.qmsum_topics --split train --data /tmp/qmsum_train
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench import qmsum

MORE_VAL = qmsum.DATA / "topics_val"
AMI_PREFIXES = ("ES", "IS", "TS")
VARIANTS = (  # name, topics (else fixed chunks), who-talks shifts
    ("topics", True, True),
    ("lexical_only", True, False),
    ("fixed_chunks", False, False),
)


def _spans(topic: dict) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in topic["relevant_text_span"]]


def import_meetings(checkout: Path, out: Path) -> int:
    """QMSum's AMI train/val files in bench's format; never the test split."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for split in ("train", "val"):
        for path in sorted((checkout / "data" / "ALL" / split).glob("*.json")):
            if not path.stem.startswith(AMI_PREFIXES):
                continue
            raw = json.loads(path.read_text())
            topics = [{"topic": t["topic"], "spans": _spans(t)} for t in raw["topic_list"]]
            turns = raw["meeting_transcripts"]
            meeting = {
                "id": path.stem,
                "split": split,
                "source": f"Yale-LILY/QMSum:data/ALL/{split}/{path.name}",
                "reference_summary": raw["general_query_list"][0]["answer"],
                "topics": topics,
                "turns": [{"speaker": t["speaker"], "text": t["content"]} for t in turns],
            }
            (out / path.name).write_text(json.dumps(meeting))
            n += 1
    return n


def meetings(split: str, folders: list[Path]) -> list[dict]:
    return qmsum.load(split, folders=folders)


def boundaries(summarizer, segs, by_topic: bool, speakers: bool = True) -> list[float]:
    """Where the summarizer's chapters start (after the first); ``speakers=False``: the
    lexical dips alone (the code before who-talks shifts were added)."""
    from app.llm import topics

    budget = summarizer.input_budget(None)
    if by_topic:
        saved, topics.SPEAKER_WEIGHT = (
            topics.SPEAKER_WEIGHT,
            (topics.SPEAKER_WEIGHT if speakers else 0.0),
        )
        try:
            parts = summarizer._parts(segs, budget, True)
        finally:
            topics.SPEAKER_WEIGHT = saved
    else:  # the code before topics: chunks of at most five minutes that fit one call
        parts = summarizer.chunk(segs, budget, summarizer.chapter_target_s)
    return [p[0].start for p in parts[1:] if p and p[0].start is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--data", type=Path, action="append", help="more meeting folders")
    parser.add_argument("--import", dest="checkout", type=Path, help="a QMSum checkout")
    parser.add_argument("--out", type=Path, help="where --import writes")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    if args.checkout:
        print(f"{import_meetings(args.checkout, args.out or MORE_VAL)} meetings written")
        return

    from app.core.model_assets import resolve_llm_model
    from app.core.settings import Settings
    from app.llm.engines import LlamaCppEngine
    from app.llm.grounding import segments_from_dicts
    from app.llm.summarize import TranscriptSummarizer

    settings = Settings()
    path = resolve_llm_model("llama_cpp", settings.llm_model, settings.cache_dir)
    engine = LlamaCppEngine(path, settings.llm_context_tokens, settings.llm_threads)
    summarizer = TranscriptSummarizer(engine, max_output_tokens=512)
    rows = []
    for m in meetings(args.split, [qmsum.DATA, MORE_VAL, *(args.data or [])]):
        segd, starts = qmsum.timed_segments(m)
        if segd[-1]["end"] < summarizer.chapters_min_s:
            continue  # too short for chapters
        segs = segments_from_dicts(segd)
        ref = qmsum.reference_boundaries(m, starts, segd[-1]["end"])
        row = {"id": m["id"], "minutes": round(segd[-1]["end"] / 60, 1), "reference": len(ref)}
        for name, by_topic, speakers in VARIANTS:
            hyp = boundaries(summarizer, segs, by_topic, speakers)
            row[name] = round(qmsum.boundary_f1(ref, hyp), 3)
            row[f"{name}_boundaries"] = len(hyp)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "split": args.split,
        "meetings": len(rows),
        **{f"{k}_f1": round(statistics.mean(r[k] for r in rows), 3) for k, _, _ in VARIANTS},
        "reference_boundaries": sum(r["reference"] for r in rows),
        **{f"{k}_boundaries": sum(r[f"{k}_boundaries"] for r in rows) for k, _, _ in VARIANTS},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
