"""Diarization accuracy (DER) and cost against transcription of the same audio.

Accuracy: DER with a 0.25 s collar (app/speech/der.py, md-eval's definition, overlap
scored) of :class:`app.speech.diarize.Diarizer` against reference RTTM on real
two-speaker conversations that ship with references:

- ``phone_call``: tests/data/phone_call.flac, a two-person telephone call (pyannote-audio's
  sample, MIT) with tests/data/phone_call.rttm;
- ``ami_dev00``, ``ami_dev01``: two-speaker AMI meeting excerpts (CC BY 4.0) from
  bench/data/diarization/, and the same two passed through a simulated telephone channel
  (8 kHz, mu-law, back to 16 kHz), suffix ``+tel``.

Each is scored with the speaker count found automatically and with ``max_speakers=2``
(what a caller who knows it is a two-party call would send).

Cost, on the same clips: wall time of the Transcriber's engine (SpeechToText from the
service's settings, decode included) alone, of the Diarizer alone, and of both run in
parallel threads as the Serve pipeline runs them. Interleaved per run, medians; the
figures are ratios to the transcription time, so load from elsewhere hits both alike.

    python -m bench.diarization --runs 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests" / "data"
BENCH = REPO / "bench" / "data" / "diarization"


def _wav(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes())
    return buf.getvalue()


def telephone(pcm: np.ndarray) -> np.ndarray:
    """Narrow-band phone channel: 8 kHz, 8-bit mu-law (G.711), back to 16 kHz."""
    from scipy.signal import resample_poly

    y = np.clip(resample_poly(pcm, 1, 2), -1, 1)
    mu = 255.0
    c = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    c = np.round((c + 1) * 127.5) / 127.5 - 1
    y = np.sign(c) * ((1 + mu) ** np.abs(c) - 1) / mu
    return resample_poly(y, 2, 1).astype(np.float32)


def clips() -> list[tuple[str, bytes, list]]:
    from app.speech.audio import decode
    from app.speech.der import read_rttm

    out = []
    out.append(
        (
            "phone_call",
            (TESTS / "phone_call.flac").read_bytes(),
            read_rttm((TESTS / "phone_call.rttm").read_text(), uri="phone_call"),
        )
    )
    rttm = (BENCH / "ami.rttm").read_text()
    for uri in ("ami_dev00", "ami_dev01"):
        data = (BENCH / f"{uri}.flac").read_bytes()
        ref = read_rttm(rttm, uri=uri)
        out.append((uri, data, ref))
        out.append((f"{uri}+tel", _wav(telephone(decode(data))), ref))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="Timed runs per clip (median).")
    parser.add_argument("--json", type=Path, help="Write the rows here too.")
    args = parser.parse_args()

    from app.core.settings import get_settings
    from app.speech.der import der
    from app.speech.diarize import DiarizeOptions, Diarizer, turns_of
    from app.speech.stt import SpeechToText
    from bench.overhead import machine

    t0 = time.perf_counter()
    diarizer = Diarizer()
    load_s = time.perf_counter() - t0
    stt = SpeechToText.from_settings(get_settings())
    rows = []
    pool = ThreadPoolExecutor(2)
    for name, data, ref in clips():
        auto = diarizer.diarize_bytes(data)
        two = diarizer.diarize_bytes(data, DiarizeOptions(max_speakers=2))
        stt.transcribe_bytes(data)  # warm-up
        t_stt, t_dia, t_par = [], [], []
        for _ in range(args.runs):
            a = time.perf_counter()
            stt.transcribe_bytes(data)
            t_stt.append(time.perf_counter() - a)
            a = time.perf_counter()
            diarizer.diarize_bytes(data)
            t_dia.append(time.perf_counter() - a)
            a = time.perf_counter()
            f1 = pool.submit(stt.transcribe_bytes, data)
            f2 = pool.submit(diarizer.diarize_bytes, data)
            f1.result(), f2.result()
            t_par.append(time.perf_counter() - a)
        audio_s = auto.turns[-1].end if auto.turns else 0.0
        ms, md, mp = (statistics.median(x) for x in (t_stt, t_dia, t_par))
        row = {
            "clip": name,
            "ref_speakers": len({r[2] for r in ref}),
            "found_auto": len(auto.speakers),
            "der_auto": round(der(ref, turns_of(auto.turns)).der, 4),
            "der_max2": round(der(ref, turns_of(two.turns)).der, 4),
            "transcribe_s": round(ms, 3),
            "diarize_s": round(md, 3),
            "both_parallel_s": round(mp, 3),
            "diarize_vs_transcribe": round(md / ms, 3),
            "parallel_vs_transcribe": round(mp / ms, 3),
            "last_turn_end_s": round(audio_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "machine": machine(),
        "stt_model": stt.model_name,
        "diarizer": diarizer.model_name,
        "diarizer_load_s": round(load_s, 2),
        "mean_der_auto": round(statistics.mean(r["der_auto"] for r in rows), 4),
        "mean_der_max2": round(statistics.mean(r["der_max2"] for r in rows), 4),
    }
    print(json.dumps(summary))
    print()
    print("| Clip | Ref | Found | DER auto | DER max 2 | Transcribe | Diarize | Both, parallel |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['clip']}` | {r['ref_speakers']} | {r['found_auto']} | "
            f"{100 * r['der_auto']:.1f} % | {100 * r['der_max2']:.1f} % | "
            f"{r['transcribe_s']:.2f} s | {r['diarize_s']:.2f} s "
            f"({r['diarize_vs_transcribe']:.2f}x) | {r['both_parallel_s']:.2f} s "
            f"({r['parallel_vs_transcribe']:.2f}x) |"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
