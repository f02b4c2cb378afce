"""Transcript and summary quality on real conversational speech with references.

Two parts, both on recordings nobody on this project made (sources in
``bench/data/SOURCES.md`` and ``tests/data/SOURCES.md``):

* **STT**: word error rate and real-time factor (transcribe seconds / audio seconds)
  of each Whisper model, with and without VAD. The AMI meeting excerpt ships one
  reference per speaker and one headset track per speaker, so WER is the
  concatenated minimum-permutation WER (cpWER) over the four tracks; jfk.flac has
  its one-sentence reference.
* **Summaries**: the bundled LLM on the transcripts of the phone call, the AMI
  meeting mix and a 13-minute W3C community group call (``--long`` adds 43 minutes
  of W3C task force calls, joined): share of items whose evidence occurs in the transcript, n-gram
  repetition rate, share of action items quoting a commitment, outputs that fail
  the degeneracy checks, and the extractive-fallback rate. ``--legacy PATH`` runs
  an older ``summarize.py`` (e.g. ``git show HEAD:app/llm/summarize.py``) for the
  "before" column: its items carry no evidence, so none counts as grounded.

    python -m bench.quality --stt-models tiny.en,base,small --summaries
    python -m bench.quality --summaries --legacy /tmp/summarize_head.py --json before.json
    python -m bench.quality --summaries --long --json after.json
    python -m bench.quality --score before.json after.json   # both by today's checks

Against human references (QMSum, train and val splits only): ``--qmsum`` runs
:mod:`bench.qmsum` with the arguments that follow it (ROUGE, boundary F1, verbatim share,
the first-N-words baseline and git HEAD's summarizer in the same run):

    python -m bench.quality --qmsum --split val --systems previous,current
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AMI = REPO / "bench" / "data" / "ami_remote"
TESTS = REPO / "tests" / "data"
MEETINGS = TESTS / "meetings"
TASK_FORCE_CALLS = [
    MEETINGS / f"w3c_ccg_traceability_{day}.ogg"
    for day in ("2022-08-09", "2023-06-27", "2023-11-28")
] + [MEETINGS / "w3c_ccg_2024-01-23.ogg"]
JFK_REF = (
    "And so my fellow Americans ask not what your country can do for you "
    "ask what you can do for your country"
)
_FILLERS = {"um", "uh", "mm", "hmm", "mmhmm", "mhm", "uhhuh", "ah", "er", "erm"}


def wer_words(text: str) -> list[str]:
    """Lowercase words without punctuation or fillers (AMI writes 'L_C_D_' for 'LCD')."""
    text = text.lower().replace("_", "").replace("-", "")
    text = re.sub(r"[^\w\s']", " ", text).replace("'", "")
    return [w for w in text.split() if w not in _FILLERS]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def cp_wer(refs: list[str], hyps: list[str]) -> float:
    """Concatenated minimum-permutation WER: best assignment of hypotheses to speakers."""
    r = [wer_words(x) for x in refs]
    h = [wer_words(x) for x in hyps] + [[] for _ in range(max(0, len(refs) - len(hyps)))]
    total = sum(len(x) for x in r)
    best = min(
        sum(edit_distance(r[i], h[p]) for i, p in enumerate(perm))
        for perm in itertools.permutations(range(len(h)), len(r))
    )
    return best / max(1, total)


def _stt(name: str, vad: bool):
    from app.core.model_assets import resolve_stt_model
    from app.core.settings import Settings
    from app.speech.stt import SpeechToText

    resolved = resolve_stt_model(f"bundled:{name}", Settings().cache_dir)
    return SpeechToText(resolved.path, resolved.name, vad=vad, cpu_threads=0)


def bench_stt(models: list[str]) -> list[dict]:
    refs = [(AMI / f"ref_{s}.txt").read_text() for s in "ABCD"]
    tracks = [(AMI / f"source{i}.flac").read_bytes() for i in range(4)]
    jfk = (TESTS / "jfk.flac").read_bytes()
    rows = []
    for name, vad in itertools.product(models, (True, False)):
        try:
            stt = _stt(name, vad)
        except Exception as exc:  # e.g. whisper small's packages not installed
            print(f"skip {name}: {exc}", file=sys.stderr)
            continue
        stt.transcribe_bytes(jfk)  # warm-up
        seconds = audio = 0.0
        hyps = []
        for data in tracks:
            out = stt.transcribe_bytes(data)
            seconds += out.transcribe_s
            audio += out.transcript.duration_s
            hyps.append(out.transcript.text)
        out = stt.transcribe_bytes(jfk)
        jfk_wer = edit_distance(wer_words(JFK_REF), wer_words(out.transcript.text)) / len(
            wer_words(JFK_REF)
        )
        row = {
            "model": name,
            "vad": vad,
            "ami_cpwer": round(cp_wer(refs, hyps), 3),
            "jfk_wer": round(jfk_wer, 3),
            "rtf": round(seconds / audio, 3),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _summarizer(legacy: str | None, max_tokens: int):
    from app.core.model_assets import resolve_llm_model
    from app.core.settings import Settings
    from app.llm.engines import LlamaCppEngine

    settings = Settings()
    engine = LlamaCppEngine(
        resolve_llm_model("llama_cpp", settings.llm_model, settings.cache_dir),
        settings.llm_context_tokens,
        settings.llm_threads,
    )
    if legacy:
        spec = importlib.util.spec_from_file_location("legacy_summarize", legacy)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module.TranscriptSummarizer(engine, max_output_tokens=max_tokens), True
    from app.llm.summarize import TranscriptSummarizer

    return TranscriptSummarizer(engine, max_output_tokens=max_tokens), False


def _pcm(paths: list[Path]):
    """Recordings decoded and joined with two seconds of silence (the tests' 43 minutes)."""
    import numpy as np

    from app.speech.audio import SAMPLE_RATE, decode

    gap = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    pieces = []
    for path in paths:
        pieces += [decode(path.read_bytes()), gap]
    return np.concatenate(pieces[:-1])


def bench_summaries(stt_model: str, legacy: str | None, max_tokens: int, long: bool) -> dict:
    from app.llm import checks
    from app.llm.grounding import TranscriptIndex, has_commitment, segments_from_dicts

    stt = _stt(stt_model, True)
    clips: dict[str, list[Path]] = {
        "phone_call": [TESTS / "phone_call.flac"],
        "ami_meeting_mix": [AMI / "mixture.flac"],
        "w3c_ccg_call_13min": [MEETINGS / "w3c_ccg_2024-01-23.ogg"],
    }
    if long:
        clips["w3c_task_force_calls_43min"] = TASK_FORCE_CALLS
    summarizer, is_legacy = _summarizer(legacy, max_tokens)
    items = grounded = actions = committed = degenerate = fallback = 0
    repetition: list[float] = []
    per_clip = {}
    for name, paths in clips.items():
        transcript = stt.transcribe_pcm(_pcm(paths))
        segments = [
            s.model_dump(include={"id", "start", "end", "text"}) for s in transcript.segments
        ]
        index = TranscriptIndex(segments_from_dicts(segments))
        t0 = time.perf_counter()
        if is_legacy:
            out = summarizer.summarize(transcript.text)
        else:
            out = summarizer.summarize(
                transcript.text, segments=segments, duration_s=transcript.duration_s
            )
        elapsed = time.perf_counter() - t0
        s = out.summary
        evidence = list(getattr(s, "key_points_evidence", [])) + list(
            getattr(s, "action_items_evidence", [])
        )
        n_items = len(s.key_points) + len(s.action_items)
        ok = sum(1 for e in evidence if index.contains(e.quote))
        action_ev = list(getattr(s, "action_items_evidence", []))
        ok_actions = sum(
            1 for e in action_ev if index.contains(e.quote) and has_commitment(e.quote)
        )
        extractive = getattr(s, "method", "llm") == "extractive_fallback"
        problems = checks.problems(s.summary, s.key_points, s.action_items, index, extractive)
        items += n_items
        grounded += ok
        actions += len(s.action_items)
        committed += ok_actions
        degenerate += bool(problems)
        fallback += getattr(s, "method", "llm") == "extractive_fallback"
        repetition.append(max(checks.repeat_rates(s.summary, s.key_points + s.action_items)))
        per_clip[name] = {
            "minutes": round(transcript.duration_s / 60, 1),
            "key_points": len(s.key_points),
            "action_items": len(s.action_items),
            "chapters": len(getattr(s, "chapters", []) or []),
            "method": getattr(s, "method", "llm"),
            "transcript": transcript.text,
            "summary": s.model_dump(),
            "problems": problems,
            "seconds": round(elapsed, 1),
        }
        print(json.dumps({name: per_clip[name]}, indent=1), flush=True)
    n = len(clips)
    return {
        "code": "legacy" if is_legacy else "current",
        "stt_model": stt_model,
        "items": items,
        "items_with_valid_evidence": round(grounded / items, 3) if items else None,
        "repetition_rate": round(sum(repetition) / n, 3),
        "action_items": actions,
        "action_items_with_commitment": round(committed / actions, 3) if actions else None,
        "degenerate_outputs": f"{degenerate}/{n}",
        "extractive_fallback_rate": round(fallback / n, 3),
        "clips": per_clip,
    }


def score_reports(paths: list[str]) -> list[dict]:
    """Score saved ``--json`` reports with today's checks, so before and after compare fairly.

    Beyond the run's own figures: the share of items that their evidence actually backs
    (shared content words, :func:`app.llm.grounding.supports`; a quote can occur in the
    transcript and still say something else), chapter titles that name no topic
    (generic, meta, one word, or the prompt echoed back: :func:`names_a_topic`), and
    names or numbers in the output that nobody said.
    """
    from app.llm import checks
    from app.llm.grounding import TranscriptIndex, segments_from_text, supports
    from app.llm.summarize import names_a_topic

    rows = []
    for path in paths:
        clips = json.loads(Path(path).read_text())["summaries"]["clips"]
        items = backed = titles = generic = unsaid = degenerate = 0
        for clip in clips.values():
            s = clip["summary"]
            index = TranscriptIndex(segments_from_text(clip["transcript"]))
            pairs = list(zip(s["key_points"], s["key_points_evidence"], strict=False)) + list(
                zip(s["action_items"], s["action_items_evidence"], strict=False)
            )
            items += len(pairs)
            backed += sum(supports(text, ev["quote"]) for text, ev in pairs)
            for chapter in s.get("chapters") or []:
                titles += 1
                generic += not names_a_topic(chapter["title"])
            fields = [s["summary"], *s["key_points"], *s["action_items"]]
            extractive = s.get("method") == "extractive_fallback"
            unsaid += bool(not extractive and checks.unsaid_names(" ".join(fields), index))
            degenerate += bool(
                checks.problems(s["summary"], s["key_points"], s["action_items"], index, extractive)
            )
        rows.append(
            {
                "report": path,
                "clips": len(clips),
                "items": items,
                "items_backed_by_their_evidence": round(backed / items, 3) if items else None,
                "chapter_titles": titles,
                "titles_naming_no_topic": generic,
                "outputs_with_unsaid_names": f"{unsaid}/{len(clips)}",
                "degenerate_outputs_by_todays_checks": f"{degenerate}/{len(clips)}",
                "seconds": {k: c["seconds"] for k, c in clips.items()},
            }
        )
    return rows


def main() -> None:
    if "--qmsum" in sys.argv:  # the human-reference benchmark has its own arguments
        from bench import qmsum

        sys.argv = [a for a in sys.argv if a != "--qmsum"]
        qmsum.main()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stt-models", default="", help="e.g. tiny.en,base,small")
    parser.add_argument("--summaries", action="store_true")
    parser.add_argument("--summary-stt", default="tiny.en", help="STT model for the summaries")
    parser.add_argument("--legacy", help="path of an older summarize.py (the 'before' run)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--long", action="store_true", help="add the 43 minutes of calls")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--score", nargs="+", help="score saved --json reports, run nothing")
    args = parser.parse_args()
    if args.score:
        print(json.dumps(score_reports(args.score), indent=1))
        return
    report: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    }
    if args.stt_models:
        report["stt"] = bench_stt([m for m in args.stt_models.split(",") if m])
    if args.summaries:
        report["summaries"] = bench_summaries(
            args.summary_stt, args.legacy, args.max_tokens, args.long
        )
        brief = {k: v for k, v in report["summaries"].items() if k != "clips"}
        print(json.dumps(brief, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
