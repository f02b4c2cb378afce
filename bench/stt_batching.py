"""Whisper on CPU: sequential decoding against faster-whisper's batched pipeline, and
what a GPU Transcriber still spends on CPU per audio minute.

1. Same recordings, same model and settings, transcribed by ``SpeechToText`` with the
   sequential decoder (baseline) and with the batched pipeline (``batched=True``,
   ``--batch-size``, one ``transcribe_many`` pass over all recordings as a batched
   Transcriber does), interleaved run by run; medians and their ratio (batched /
   sequential: below 1 means batching wins on this machine).
2. The CPU work left when the decoder runs on a GPU: audio decode (PyAV), Silero VAD
   and log-mel feature extraction, single-threaded, as CPU seconds per audio minute.
   A GPU replica needs ``GPU decode speed x this`` CPUs to keep its GPU fed
   (docs/gpu.md).

    python -m bench.stt_batching --runs 3 --copies 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from bench.overhead import DATA, machine


def _stt(batched: bool, batch_size: int, threads: int):
    from app.core.model_assets import resolve_stt_model
    from app.core.settings import Settings
    from app.speech.stt import SpeechToText

    s = Settings()
    m = resolve_stt_model(s.stt_model, s.cache_dir)
    return SpeechToText(
        m.path, m.name, device="cpu", batched=batched, batch_size=batch_size, cpu_threads=threads
    )


def cpu_side_per_audio_minute(clips: list[bytes]) -> dict:
    """Single-threaded CPU seconds per audio minute for decode, VAD and features."""
    from faster_whisper.feature_extractor import FeatureExtractor
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from app.speech.audio import SAMPLE_RATE, decode

    os.environ["OMP_NUM_THREADS"] = "1"
    fe = FeatureExtractor()
    t = {"decode": 0.0, "vad": 0.0, "features": 0.0}
    audio_s = 0.0
    for data in clips:
        c0 = time.process_time()
        pcm = decode(data)
        c1 = time.process_time()
        get_speech_timestamps(pcm, VadOptions(max_speech_duration_s=30))
        c2 = time.process_time()
        for start in range(0, pcm.shape[0], 30 * SAMPLE_RATE):
            fe(pcm[start : start + 30 * SAMPLE_RATE])
        c3 = time.process_time()
        t["decode"] += c1 - c0
        t["vad"] += c2 - c1
        t["features"] += c3 - c2
        audio_s += pcm.shape[0] / SAMPLE_RATE
    per_min = {k: round(v / audio_s * 60, 3) for k, v in t.items()}
    per_min["total"] = round(sum(per_min.values()), 3)
    return {"audio_s": round(audio_s, 1), "cpu_s_per_audio_min": per_min}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--copies", type=int, default=4, help="recordings per pass (jfk + 60 s)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="CTranslate2 threads (0 = all)")
    ap.add_argument("--jfk-only", action="store_true", help="only the 11 s clip, no 60 s one")
    args = ap.parse_args()

    from app.speech.audio import decode
    from app.speech.stt import SttOptions

    jfk = (DATA / "jfk.flac").read_bytes()
    pcm = decode(jfk)
    long = np.concatenate([pcm] * 5 + [np.zeros(16000 * 5, np.float32)])  # ~60 s
    pcms = ([pcm] * args.copies) if args.jfk_only else ([pcm, long] * args.copies)[: args.copies]
    audio_s = sum(p.shape[0] for p in pcms) / 16000
    seq, bat = _stt(False, args.batch_size, args.threads), _stt(True, args.batch_size, args.threads)
    opts = SttOptions()
    for stt in (seq, bat):  # warm-up
        stt.transcribe_many(pcms[:1], opts)
    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    texts = {}
    for _ in range(args.runs):
        for name, stt in (("sequential", seq), ("batched", bat)):
            t0 = time.perf_counter()
            out = stt.transcribe_many(pcms, opts)
            times[name].append(time.perf_counter() - t0)
            texts[name] = out[0].text
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "machine": machine(),
        "model": seq.model_name,
        "recordings": len(pcms),
        "audio_s": round(audio_s, 1),
        "batch_size": args.batch_size,
        "sequential_median_s": round(med["sequential"], 3),
        "batched_median_s": round(med["batched"], 3),
        "ratio_batched_over_sequential": round(med["batched"] / med["sequential"], 3),
        "rtf_sequential": round(med["sequential"] / audio_s, 4),
        "rtf_batched": round(med["batched"] / audio_s, 4),
        "runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "texts": texts,
        "cpu_side": cpu_side_per_audio_minute([jfk, (DATA / "multilingual.mp3").read_bytes()]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
