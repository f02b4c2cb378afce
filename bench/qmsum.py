"""Summaries against human references: QMSum meetings (AMI), train and validation only.

QMSum (Zhong et al., NAACL 2021; ``bench/data/qmsum/SOURCES.md``) gives each meeting a
human summary ("Summarize the whole meeting.") and a human topic segmentation as turn
spans. The test split is never used: it is kept for an independent evaluation.

QMSum transcripts carry no times, so turns get times from a constant speaking rate of
2.5 words/s (150 words/min, conversational English); the ±90 s boundary tolerance is then
about ±225 words, and the summarizer sees the same clock as the reference boundaries.

Systems scored in one run, on the same meetings:

* ``first_n``: the first N words of the transcript, N = the length of the ``current``
  output (summary + key points + action items), so length cannot explain a difference;
  its ``summary_*`` figures take N = the length of the summary text alone, which is
  scored on its own too (the reference is one paragraph, as ``summary.summary`` is);
* ``oracle``: not a system but a ceiling. Whole transcript lines picked greedily to
  maximise ROUGE-1 F1 against the reference itself, at most N words (the same N). No
  summarizer sees the reference, so an extractive one can hardly score above this;
* ``previous``: git HEAD's ``app/llm`` (or ``--previous REF``'s) in a temporary package;
* ``current``: the working tree's summarizer.

    python -m bench.qmsum --split val --json qmsum_val.json
    python -m bench.qmsum --split val --meetings ES2006a,TS3010b --max-minutes 20
    python -m bench.qmsum --split val --systems "" --data bench/data/qmsum/topics_val
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data" / "qmsum"
WORDS_PER_S = 2.5
TOLERANCE_S = 90.0
VERBATIM_SHARE = 0.8  # a point whose words are 80% one contiguous run of one line is a copy
_NOISE = re.compile(r"\{[a-z_]+\}")
_SPACE_PUNCT = re.compile(r"\s+([,.?!;:'])")


def clean(text: str) -> str:
    """QMSum writes '{vocalsound} Okay , so .': drop the event tags, rejoin punctuation."""
    text = _NOISE.sub(" ", text)
    text = _SPACE_PUNCT.sub(r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    return "" if re.fullmatch(r"[\W_]*", text) else text


def load(split: str, ids: list[str] | None = None, folders: list[Path] | None = None) -> list[dict]:
    """The meetings of ``split`` (committed ones, or those of ``folders``, first copy of an
    id wins), by id; refuses the test split outright."""
    if split not in {"train", "val"}:
        raise SystemExit("only the train and val splits are used (test is held out)")
    seen: dict[str, dict] = {}
    for folder in folders or [DATA]:
        for path in sorted(folder.glob("*.json")):
            m = json.loads(path.read_text())
            if m["split"] == split and (not ids or m["id"] in ids):
                seen.setdefault(m["id"], m)
    return [seen[k] for k in sorted(seen)]


def timed_segments(meeting: dict, max_minutes: float | None = None) -> tuple[list[dict], dict]:
    """Turns as transcript segments with times from the speaking rate, and turn -> start."""
    segments, starts, t = [], {}, 0.0
    for i, turn in enumerate(meeting["turns"]):
        starts[i] = t
        text = clean(turn["text"])
        if not text:
            continue
        dur = max(0.6, len(text.split()) / WORDS_PER_S)
        if max_minutes and t + dur > max_minutes * 60:
            break
        segments.append(
            {
                "id": len(segments),
                "start": round(t, 2),
                "end": round(t + dur, 2),
                "text": text,
                "speaker": turn["speaker"],
            }
        )
        t += dur
    return segments, starts


def reference_boundaries(meeting: dict, starts: dict, end_s: float) -> list[float]:
    """Start times of the human topics after the first (inside the scored span)."""
    firsts = sorted(min(a for a, _ in t["spans"]) for t in meeting["topics"])
    return [starts[i] for i in firsts[1:] if i in starts and 0 < starts[i] < end_s]


def boundary_f1(ref: list[float], hyp: list[float], tol: float = TOLERANCE_S) -> float:
    """One-to-one matching within ``tol`` seconds, greedy by distance."""
    if not ref and not hyp:
        return 1.0
    pairs = sorted((abs(r - h), i, j) for i, r in enumerate(ref) for j, h in enumerate(hyp))
    used_r, used_h, hits = set(), set(), 0
    for d, i, j in pairs:
        if d <= tol and i not in used_r and j not in used_h:
            used_r.add(i)
            used_h.add(j)
            hits += 1
    if not hits:
        return 0.0
    p, r = hits / len(hyp), hits / len(ref)
    return 2 * p * r / (p + r)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def is_verbatim(point: str, lines: list[list[str]], speakers: set[str] = frozenset()) -> bool:
    """Most of the point's words are one contiguous run of a single transcript line.

    Words of a speaker's name in front are not counted: "Project Manager there's the
    minutes from the first meeting." copies its line as much as the line alone does."""
    from app.llm.answers import without_speaker  # the summarizer's own copy check

    words = without_speaker(_words(point), speakers)
    if not words:
        return False
    for line in lines:
        m = difflib.SequenceMatcher(None, words, line, autojunk=False)
        if m.find_longest_match(0, len(words), 0, len(line)).size >= VERBATIM_SHARE * len(words):
            return True
    return False


def rouge(reference: str, candidate: str) -> dict:
    """ROUGE-1/2/L F1 x100 (Porter stemming), and Lsum over sentences split on '.'."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    nl = lambda t: "\n".join(s.strip() for s in re.split(r"(?<=[.!?])\s+", t) if s.strip())  # noqa: E731
    s = scorer.score(nl(reference), nl(candidate))
    return {k: round(100 * v.fmeasure, 2) for k, v in s.items()}


def output_text(summary) -> str:
    """What a reader gets: the summary, then key points and action items as sentences."""
    items = [summary.summary, *summary.key_points, *summary.action_items]
    return " ".join(i.strip().rstrip(".") + "." for i in items if i and i.strip())


def previous_package(ref: str = "HEAD") -> str:
    """``ref``'s ``app/llm`` (minus the engines) as a temporary package; its name."""
    root = Path(tempfile.mkdtemp(prefix="aipp_prev_"))
    pkg = root / "prev_llm"
    pkg.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", ref, "app/llm/"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in names:
        if not name.endswith(".py") or name.endswith("engines.py"):
            continue
        src = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        src = re.sub(r"\bapp\.llm\.engines\b", "app_llm_engines_", src)
        src = src.replace("from app.llm import", "from prev_llm import")
        src = src.replace("from app.llm.", "from prev_llm.")
        src = src.replace("app_llm_engines_", "app.llm.engines")
        (pkg / Path(name).name).write_text(src)
    sys.path.insert(0, str(root))
    return "prev_llm"


class ReplayEngine:
    """The engine's answers kept on disk, keyed by everything a call depends on.

    Each llama.cpp call is seeded from its own messages (``engines.call_seed``), so an
    answer is a function of its input: replaying it is exact. A change that only
    post-processes answers is then measured on every meeting in seconds, and the
    previous code replays the same answers wherever it asks the same question.
    """

    def __init__(self, engine, folder: Path) -> None:
        self.engine, self.folder = engine, folder
        self.name, self.model_name = engine.name, engine.model_name
        self.context_tokens = engine.context_tokens
        self.hits = self.misses = 0
        folder.mkdir(parents=True, exist_ok=True)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def generate(self, messages, *, max_tokens, temperature, json_schema=None):
        from app.llm.engines import Completion

        key = json.dumps(
            [self.model_name, messages, max_tokens, round(temperature, 4), json_schema],
            sort_keys=True,
            default=str,
        )
        path = self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
        if path.exists():
            self.hits += 1
            return Completion(**json.loads(path.read_text()))
        self.misses += 1
        out = self.engine.generate(
            messages, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema
        )
        path.write_text(out.model_dump_json())
        return out

    def stream(self, messages, *, max_tokens, temperature):
        return self.engine.stream(messages, max_tokens=max_tokens, temperature=temperature)


def summarizer(
    which: str,
    max_tokens: int,
    model: str | None,
    previous: str = "HEAD",
    replay: Path | None = None,
):
    from app.core.model_assets import resolve_llm_model
    from app.core.settings import Settings
    from app.llm.engines import LlamaCppEngine

    settings = Settings()
    engine = LlamaCppEngine(
        resolve_llm_model("llama_cpp", model or settings.llm_model, settings.cache_dir),
        settings.llm_context_tokens,
        settings.llm_threads,
    )
    if replay is not None:
        engine = ReplayEngine(engine, replay)
    pkg = previous_package(previous) if which == "previous" else "app.llm"
    module = importlib.import_module(f"{pkg}.summarize")
    return module.TranscriptSummarizer(engine, max_output_tokens=max_tokens)


def score(meeting: dict, segments: list[dict], starts: dict, summary, seconds: float) -> dict:
    end_s = segments[-1]["end"]
    text = output_text(summary)
    lines = [_words(s["text"]) for s in segments]
    speakers = {w for s in segments for w in _words(s.get("speaker") or "")}
    points = list(summary.key_points)
    chapters = list(getattr(summary, "chapters", None) or [])
    hyp = [c.start for c in chapters[1:] if c.start is not None]
    ref = reference_boundaries(meeting, starts, end_s)
    alone = rouge(meeting["reference_summary"], summary.summary or "")
    return {
        **rouge(meeting["reference_summary"], text),
        **{f"summary_{k}": v for k, v in alone.items()},
        "summary_words": len((summary.summary or "").split()),
        "boundary_f1": round(boundary_f1(ref, hyp), 3),
        "chapters": len(chapters),
        "ref_boundaries": len(ref),
        "titles": [c.title for c in chapters],
        "key_points": len(points),
        "verbatim_points": sum(is_verbatim(p, lines, speakers) for p in points),
        "words": len(text.split()),
        "method": getattr(summary, "method", "llm"),
        "seconds": round(seconds, 1),
        "text": text,
    }


def first_n(meeting: dict, segments: list[dict], n: int) -> dict:
    words = " ".join(s["text"] for s in segments).split()[:n]
    return {**rouge(meeting["reference_summary"], " ".join(words)), "words": len(words)}


def oracle(meeting: dict, segments: list[dict], n: int) -> dict:
    """The ceiling of extraction: lines chosen by their ROUGE-1 against the reference.

    Greedy, the way extractive oracles are built for summarization datasets (Nallapati
    et al., 2017): add the line that raises ROUGE-1 F1 most while the text stays within
    ``n`` words; stop when no line raises it. Lines of fewer than four words are left out.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    ref = meeting["reference_summary"]
    lines = list(dict.fromkeys(s["text"] for s in segments if len(s["text"].split()) >= 4))
    chosen: list[str] = []
    best = 0.0
    while True:
        words = sum(len(c.split()) for c in chosen)
        pick = None
        for line in lines:
            if line in chosen or words + len(line.split()) > n:
                continue
            f = scorer.score(ref, " ".join([*chosen, line]))["rouge1"].fmeasure
            if f > best + 1e-6:
                best, pick = f, line
        if pick is None:
            break
        chosen.append(pick)
    order = {line: i for i, line in enumerate(lines)}
    text = " ".join(sorted(chosen, key=order.__getitem__))
    return {**rouge(ref, text), "words": len(text.split())}


def mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def summarize_rows(rows: list[dict]) -> dict:
    out = {
        k: mean(rows, k)
        for k in (
            "rouge1",
            "rouge2",
            "rougeL",
            "rougeLsum",
            "summary_rouge1",
            "summary_rouge2",
            "summary_rougeL",
            "summary_words",
            "boundary_f1",
            "seconds",
            "words",
        )
    }
    points = sum(r.get("key_points", 0) for r in rows)
    if points:
        out["verbatim_share"] = round(sum(r["verbatim_points"] for r in rows) / points, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--meetings", default="", help="comma-separated ids (default: all)")
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        help="more meeting folders (bench.qmsum_topics --import; its topics_val)",
    )
    parser.add_argument("--systems", default="previous,current")
    parser.add_argument("--max-minutes", type=float, default=None, help="truncate meetings")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--model", default=None, help="LLM model name (default: settings)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--previous", default="HEAD", help="git ref of the previous code")
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="keep the model's answers in this folder and replay them (exact: seeded calls)",
    )
    args = parser.parse_args()
    ids = [m for m in args.meetings.split(",") if m]
    meetings = load(args.split, ids, [DATA, *args.data] if args.data else None)
    systems = [s for s in args.systems.split(",") if s]
    rows: dict[str, list[dict]] = {s: [] for s in ["first_n", "oracle", *systems]}
    for which in systems:
        summ = summarizer(which, args.max_tokens, args.model, args.previous, args.replay)
        for m in meetings:
            segments, starts = timed_segments(m, args.max_minutes)
            text = " ".join(s["text"] for s in segments)
            t0, c0 = time.perf_counter(), time.process_time()
            out = summ.summarize(text, segments=segments, duration_s=segments[-1]["end"])
            row = {
                "id": m["id"],
                "minutes": round(segments[-1]["end"] / 60, 1),
                **score(m, segments, starts, out.summary, time.perf_counter() - t0),
                "cpu_seconds": round(time.process_time() - c0, 1),  # fairer on a shared box
                "llm_calls": getattr(out, "chunks", None),
                "retries": getattr(out, "retries", None),
                "prompt_tokens": getattr(out, "prompt_tokens", None),
                "completion_tokens": getattr(out, "completion_tokens", None),
            }
            rows[which].append(row)
            print(json.dumps({which: row}), flush=True)
    length_from = "current" if "current" in rows else systems[-1] if systems else None
    for m in meetings:
        segments, _ = timed_segments(m, args.max_minutes)
        ref_n = len(m["reference_summary"].split())
        mine = next((r for r in rows.get(length_from, []) if r["id"] == m["id"]), {})
        row = {"id": m["id"], **first_n(m, segments, mine.get("words", ref_n))}
        alone = first_n(m, segments, mine.get("summary_words", ref_n))
        row.update({f"summary_{k}": v for k, v in alone.items() if k != "words"})
        row["summary_words"] = alone["words"]
        rows["first_n"].append(row)
        row = {"id": m["id"], **oracle(m, segments, mine.get("words", ref_n))}
        alone = oracle(m, segments, mine.get("summary_words", ref_n))
        row.update({f"summary_{k}": v for k, v in alone.items() if k != "words"})
        row["summary_words"] = alone["words"]
        rows["oracle"].append(row)
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "split": args.split,
        "meetings": [m["id"] for m in meetings],
        "max_minutes": args.max_minutes,
        "means": {s: summarize_rows(r) for s, r in rows.items()},
        "rows": rows,
    }
    print(json.dumps(report["means"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
