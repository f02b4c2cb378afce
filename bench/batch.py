"""The Ray Data batch pipeline against a plain sequential loop, same files, same models.

Baseline: one Python process loads ``SpeechToText`` and ``TranscriptSummarizer``
(the service's settings) and runs every file through both, one after the other.
Pipeline: ``python -m pipelines.batch_summarize`` on a fresh local Ray, as an
operator runs it. Both clocks include loading the models (and, for the
pipeline, starting Ray); the pipeline's steady state (its dataset execution
time) is reported too. The figure of merit is audio seconds per wall second;
the goal on a 2-core CPU is pipeline >= 1.0x the loop.

    python -m bench.batch                      # 20 clips: the test clips, repeated
    python -m bench.batch --clips 40 --json bench/results/batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
# multilingual.mp3 is left out by default: English-only Whisper turns it into a minute of
# noise for the LLM, which makes the run long without telling anything new.
DEFAULT_SOURCES = ["jfk.flac", "hotwords.mp3", "stereo_diarization.wav", "no_speech.wav"]


def machine() -> dict:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def make_inputs(folder: Path, n: int, sources: list[str]) -> list[Path]:
    paths = []
    for i in range(n):
        src = DATA / sources[i % len(sources)]
        dst = folder / f"{i:03d}-{src.name}"
        dst.write_bytes(src.read_bytes())
        paths.append(dst)
    return paths


def run_loop(paths: list[Path]) -> dict:
    """The baseline: both models in this process, one file after another."""
    from app.core.settings import get_settings
    from app.llm.engines import build_engine
    from app.llm.summarize import TranscriptSummarizer
    from app.speech.stt import SpeechToText

    settings = get_settings()
    t0 = time.perf_counter()
    stt = SpeechToText.from_settings(settings)
    summarizer = TranscriptSummarizer(
        build_engine(settings), settings.llm_max_output_tokens, settings.llm_temperature
    )
    loaded = time.perf_counter()
    audio_s = 0.0
    for path in paths:
        out = stt.transcribe_bytes(
            path.read_bytes(), max_duration_s=settings.max_audio_minutes * 60
        )
        summarizer.summarize(out.transcript.text)
        audio_s += out.transcript.duration_s
    end = time.perf_counter()
    return {
        "wall_s": end - t0,
        "steady_s": end - loaded,
        "audio_s": audio_s,
        "threads": {
            "stt": settings.stt_cpu_threads or "ctranslate2 default",
            "llm": settings.llm_threads or "llama.cpp default (cores/2)",
        },
    }


def run_pipeline(src: Path, dst: Path, extra: list[str]) -> dict:
    from pipelines.batch_summarize import parse_report

    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray, like an operator's laptop
    env.pop("AIPP_DATABASE_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "pipelines.batch_summarize",
        "--input",
        str(src),
        "--output",
        str(dst),
        "--quiet",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    report = parse_report(proc.stdout)
    if proc.returncode != 0 or report is None:
        raise SystemExit(f"pipeline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "wall_s": wall,
        "steady_s": report["pipeline_s"],
        "audio_s": report["audio_s"],
        "ok": report["ok"],
        "failed": report["failed"],
        "plan": report["plan"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument(
        "--sources",
        default=",".join(DEFAULT_SOURCES),
        help="clips from tests/data to repeat, comma-separated",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("pipeline_args", nargs="*", help="extra batch_summarize flags (after --)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="aipp-bench-batch-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        paths = make_inputs(src, args.clips, args.sources.split(","))
        loop = run_loop(paths)
        pipe = run_pipeline(src, Path(tmp) / "out", args.pipeline_args)

    speed = lambda r, k: r["audio_s"] / r[k]  # noqa: E731
    result = {
        "machine": machine(),
        "clips": args.clips,
        "sources": args.sources.split(","),
        "audio_s": round(loop["audio_s"], 1),
        "loop": {
            **loop,
            "speed_x": round(speed(loop, "wall_s"), 3),
            "steady_speed_x": round(speed(loop, "steady_s"), 3),
        },
        "pipeline": {
            **pipe,
            "speed_x": round(speed(pipe, "wall_s"), 3),
            "steady_speed_x": round(speed(pipe, "steady_s"), 3),
        },
    }
    result["ratio"] = round(result["pipeline"]["speed_x"] / result["loop"]["speed_x"], 3)
    result["steady_ratio"] = round(
        result["pipeline"]["steady_speed_x"] / result["loop"]["steady_speed_x"], 3
    )
    print(json.dumps(result, indent=2, default=str))
    print(
        f"\nloop     {result['loop']['speed_x']:.2f} audio-s/wall-s "
        f"({loop['wall_s']:.1f} s for {loop['audio_s']:.0f} s of audio)\n"
        f"pipeline {result['pipeline']['speed_x']:.2f} audio-s/wall-s "
        f"({pipe['wall_s']:.1f} s)\nratio    {result['ratio']:.2f}x "
        f"(steady state {result['steady_ratio']:.2f}x)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
