"""Overhead of the platform over the bare models, measured in one run.

Baseline: the same two models (faster-whisper + llama.cpp, same settings,
greedy decoding) called directly in this Python process. Platform: ``POST
/v1/summarize`` against a warm ``aipp serve``. Both process the same clip N
times; we report medians and their ratio (goal ≤ 1.10).

    python -m bench.overhead --runs 5            # starts its own service
    python -m bench.overhead --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
DEFAULT_CLIPS = ["jfk.flac", "speech60.wav"]


def speech_60s() -> bytes:
    """60 s of English speech as 16 kHz WAV: two 30 s windows of jfk, hotwords and
    stereo_diarization separated by silence.

    multilingual.mp3 is not English, and a window that repeats one sentence trips
    Whisper's compression-ratio check into temperature sampling; either way each run
    would decode different text. This clip decodes the same way every time.
    """
    import io
    import wave

    import numpy as np

    from app.speech.audio import SAMPLE_RATE, decode

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)

    parts = [
        decode((DATA / n).read_bytes())
        for n in ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")
    ]
    window = np.concatenate([parts[0], silence(4), parts[1], silence(4), parts[2]])
    window = np.concatenate([window, silence(30 - window.shape[0] / SAMPLE_RATE)])
    pcm = np.concatenate([window, window])
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def load_clip(name: str) -> bytes:
    return speech_60s() if name == "speech60.wav" else (DATA / name).read_bytes()


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def start_service(tmp: Path) -> tuple[str, object]:
    """A Ray head plus `aipp serve` on it, exactly as the test suite starts them."""
    sys.path.insert(0, str(REPO))
    from tests.cluster_fixtures import start_head, start_service

    temp_dir = Path(f"/tmp/aipp-bench-{os.getpid()}")
    cluster = start_head(temp_dir, num_cpus=4)
    svc, proc = start_service(cluster, tmp / "data", {}, tmp / "serve.log")
    return svc.url, (proc, temp_dir)


def stop_service(handle) -> None:
    from tests.cluster_fixtures import stop_cluster

    proc, temp_dir = handle
    proc.terminate()
    proc.wait(timeout=60)
    stop_cluster(temp_dir)


def ratio_row(direct: list[float], service: list[float]) -> dict:
    """Medians of both sides and their ratio (service / direct), plus the raw runs."""
    return {
        "direct_median_s": round(statistics.median(direct), 3),
        "service_median_s": round(statistics.median(service), 3),
        "ratio": round(statistics.median(service) / statistics.median(direct), 3),
        "direct_s": [round(x, 3) for x in direct],
        "service_s": [round(x, 3) for x in service],
    }


def time_service(url: str, clip: bytes, name: str, runs: int) -> list[float]:
    times = []
    with httpx.Client(timeout=600) as client:
        for _ in range(runs):
            t0 = time.perf_counter()
            resp = client.post(f"{url}/v1/summarize", files={"file": (name, clip)})
            times.append(time.perf_counter() - t0)
            resp.raise_for_status()
    return times


def time_direct(stt, summarizer, clip: bytes, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = stt.transcribe_bytes(clip)
        summarizer.summarize(out.transcript.text)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="A running service; started here when omitted.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "overhead.json")
    args = parser.parse_args()

    # Greedy decoding on both sides, so both generate the same tokens; no result cache,
    # so every request runs both models (a cache hit is measured by bench/tasks.py).
    os.environ["AIPP_LLM_TEMPERATURE"] = "0"
    os.environ["AIPP_CACHE_ENABLED"] = "false"
    import tempfile

    from app.core.settings import Settings
    from app.llm.engines import build_engine
    from app.llm.summarize import TranscriptSummarizer
    from app.speech.stt import SpeechToText

    settings = Settings()
    stt = SpeechToText.from_settings(settings)
    engine = build_engine(settings)
    summarizer = TranscriptSummarizer(engine, settings.llm_max_output_tokens, 0.0)

    handle = None
    url = args.url
    if url is None:
        url, handle = start_service(Path(tempfile.mkdtemp(prefix="aipp-bench-")))
    results = {"machine": machine(), "runs": args.runs, "clips": {}}
    clips = {name: load_clip(name) for name in args.clips}
    try:
        for name, clip in clips.items():
            time_service(url, clip, name, 1)  # warm both sides
            time_direct(stt, summarizer, clip, 1)
            direct, svc = [], []
            # Interleaved, so a load change on the shared machine hits both sides alike.
            for _ in range(args.runs):
                svc += time_service(url, clip, name, 1)
                direct += time_direct(stt, summarizer, clip, 1)
            row = ratio_row(direct, svc)
            results["clips"][name] = row
            print(
                f"{name:20s} direct {row['direct_median_s']:7.3f}s  service "
                f"{row['service_median_s']:7.3f}s  ratio {row['ratio']:.3f}"
            )
    finally:
        if handle is not None:
            stop_service(handle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}\nwritten: {args.out}")


if __name__ == "__main__":
    main()
