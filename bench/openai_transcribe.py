"""Latency of ``POST /v1/audio/transcriptions`` against a direct faster-whisper call.

Baseline: :class:`app.speech.stt.SpeechToText` built from the same settings as the
service (model, device, compute type, beam size, VAD), transcribing the same
bytes in this process (decode included, as the service does). Service: the
OpenAI-compatible endpoint on a warm ``aipp serve``, ``response_format=json``.
Both run N times per clip, interleaved per run so that load from elsewhere on
the machine hits both alike; we report medians and their ratio (goal <= 1.10).

    python -m bench.openai_transcribe --url http://127.0.0.1:8000 --api-key aipp_... --runs 5
    python -m bench.openai_transcribe --runs 5            # starts its own service
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench.overhead import DATA, REPO, machine, ratio_row, start_service, stop_service

DEFAULT_CLIPS = ["jfk.flac", "multilingual.mp3"]


def time_service(client: httpx.Client, url: str, name: str, clip: bytes) -> tuple[float, str]:
    t0 = time.perf_counter()
    resp = client.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": (name, clip)},
        data={"model": "whisper-1", "response_format": "json"},
    )
    elapsed = time.perf_counter() - t0
    resp.raise_for_status()
    return elapsed, resp.json()["text"]


def time_direct(stt, clip: bytes) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = stt.transcribe_bytes(clip)
    return time.perf_counter() - t0, out.transcript.text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="A running service; started here when omitted.")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("AIPP_API_KEY"),
        help="Bearer key for a service with auth on (default: $AIPP_API_KEY).",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "openai_transcribe.json"
    )
    args = parser.parse_args()

    from app.core.settings import Settings
    from app.speech.stt import SpeechToText

    settings = Settings()
    stt = SpeechToText.from_settings(settings)
    clips = {name: (DATA / name).read_bytes() for name in args.clips}

    handle = None
    url = args.url
    if url is None:
        url, handle = start_service(Path(tempfile.mkdtemp(prefix="aipp-bench-")))
    url = url.rstrip("/")
    results = {
        "machine": machine(),
        "runs": args.runs,
        "stt": {
            "model": stt.model_name,
            "device": stt.device,
            "compute_type": stt.compute_type,
            "beam_size": stt.beam_size,
            "vad": stt.vad,
        },
        "clips": {},
    }
    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        with httpx.Client(timeout=600, headers=headers) as client:
            for name, clip in clips.items():
                time_service(client, url, name, clip)  # warm both sides
                time_direct(stt, clip)
                service, direct = [], []
                for _ in range(args.runs):
                    s, s_text = time_service(client, url, name, clip)
                    d, d_text = time_direct(stt, clip)
                    service.append(s)
                    direct.append(d)
                row = {**ratio_row(direct, service), "same_text": s_text == d_text}
                results["clips"][name] = row
                print(
                    f"{name:20s} direct {row['direct_median_s']:7.3f}s  service "
                    f"{row['service_median_s']:7.3f}s  ratio {row['ratio']:.3f}  "
                    f"same text: {row['same_text']}",
                    flush=True,
                )
    finally:
        if handle is not None:
            stop_service(handle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}\nwritten: {args.out}")


if __name__ == "__main__":
    main()
