"""Diarization accuracy (DER, speaker count) and cost: the current engine against senko's
own pipeline, in the same run, on real conversations with human references.

DER with a 0.25 s collar (app/speech/der.py, md-eval's definition), with overlapped
speech scored and without it (``skip_overlap``, md-eval's ``-1``); speaker-count error
(found - reference); real-time factor (diarization wall time / audio duration, decode
included) and its cost in seconds per audio minute. Engines:
``senko`` (senko 0.2.2's own pipeline, the code before issue 29), ``windows``
(bounded eigengap count + overlap from the segmentation model: the default until
2026-12-06) and ``counted`` (the default: ``windows`` plus the people only the
segmentation model's stitched local speakers hear, app/speech/local_speakers.py).

**Dev set** (every knob in app/speech/overlap_diarize.py and the window hop were chosen
on these only, ``--tune`` prints the sweep):

- ``phone_call``: tests/data/phone_call.flac, a two-person telephone call (pyannote-audio's
  sample, MIT) with tests/data/phone_call.rttm;
- ``ami_dev00``, ``ami_dev01``: two-speaker AMI excerpts (pyannote-audio's dev files,
  CC BY 4.0) in bench/data/diarization/, and the same through a simulated telephone
  channel (8 kHz, mu-law, back to 16 kHz), suffix ``+tel``;
- all three through a simulated far-field room (``+far``, below), and the three
  mixtures through a meeting room at 1.5 m (``+room``, below).

**Dev meetings** (``dev-meetings``, also tuned on): eight 30 s excerpts of other AMI
meetings with 2-4 speakers, overlap and minor speakers (pyannote-audio's debug
*training* files ``trn0N``, CC BY 4.0; the two with under 10 s of speech left out) in
bench/data/diarization/, as they are, through the telephone channel (``+tel``) and
through the meeting room at 1.5 m (``+room``). The two-speaker dev clips could not say
whether a counting rule works on meetings; these can.

**Held-out set** (never used for a choice): the AMI meeting minute in
bench/data/ami_remote/ (four speakers, overlapping; pyannote-audio's ``seriously``
tutorial, from AMI's remote-control design meetings): the whole minute, its two halves
(``/a``, ``/b``: counts differ per half), and the whole minute through the telephone
channel (``+tel``) and through a simulated far-field room (``+far``: a synthetic
reverberant impulse response, RT60 0.6 s, plus noise at 15 dB SNR; fixed seed).
``+far`` is a worst case: its echo is 28 dB louder than the direct sound, a diffuse
field no table microphone hears. ``+room`` (:func:`meeting_room`) puts each of the four
people, from their own headset track, at 1.0-2.0 m from one microphone in an 80 m^3
room with the same RT60 and noise, the echo scaled by distance (direct-to-reverberant
ratio -3.6 to -9.7 dB, Sabine's critical distance).

    python -m bench.diarization --runs 1 --json /tmp/diar.json
    python -m bench.diarization --tune          # the dev-set sweep behind the defaults
    python -m bench.diarization --stt           # also the cost against transcription
    python -m bench.diarization --count-given   # also the engine told the true count
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
import wave
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests" / "data"
BENCH = REPO / "bench" / "data" / "diarization"
AMI_MEETING = REPO / "bench" / "data" / "ami_remote"
RATE = 16000


def _wav(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
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


def far_field(pcm: np.ndarray, rt60: float = 0.6, snr_db: float = 15.0) -> np.ndarray:
    """A distant microphone, simulated: exponentially decaying noise as the room's
    impulse response (direct path first), then white noise at ``snr_db``. Seeded."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(29)
    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0
    wet = fftconvolve(pcm, rir)[: len(pcm)]
    wet /= np.max(np.abs(wet)) + 1e-9
    power = np.mean(wet**2)
    noise = rng.standard_normal(len(wet)) * np.sqrt(power / 10 ** (snr_db / 10))
    out = wet + noise
    return (0.5 * out / (np.max(np.abs(out)) + 1e-9)).astype(np.float32)


SOUND_SPEED = 343.0  # m/s


def critical_distance(volume_m3: float, rt60: float) -> float:
    """Where direct and reverberant sound are equally loud (Sabine: 0.057 sqrt(V / T60))."""
    return 0.057 * float(np.sqrt(volume_m3 / rt60))


def room_impulse(distance_m: float, rng, rt60: float = 0.6, volume_m3: float = 80.0) -> np.ndarray:
    """One talker's path to a table microphone: the direct sound after its travel time,
    then a decaying diffuse tail (from 2.5 ms on) whose energy against the direct sound
    follows the distance (DRR = (r_c / r)^2), and 1/r loudness."""
    n = int(rt60 * RATE)
    delay = int(distance_m / SOUND_SPEED * RATE)
    gap = int(0.0025 * RATE)
    t = np.arange(n - gap) / RATE
    tail = rng.standard_normal(n - gap) * np.exp(-6.9 * t / rt60)
    drr = (critical_distance(volume_m3, rt60) / distance_m) ** 2
    tail *= np.sqrt(1.0 / (drr * np.sum(tail**2)))
    rir = np.zeros(delay + n)
    rir[delay] = 1.0
    rir[delay + gap :] = tail
    return rir / distance_m


def meeting_room(
    talkers: list[np.ndarray],
    distances_m: list[float],
    rt60: float = 0.6,
    volume_m3: float = 80.0,
    snr_db: float = 15.0,
) -> np.ndarray:
    """Talkers at their own distances from one microphone in one room, plus white noise.

    ``far_field`` gives every sound a tail 28 dB louder than its direct path (a diffuse
    field only: no real meeting microphone hears that). Here the direct-to-reverberant
    ratio follows the room: with RT60 0.6 s and 80 m^3 the critical distance is 0.66 m,
    so a talker 1 m away arrives at -3.6 dB and one 2 m away at -9.7 dB. Seeded."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(29)
    wet = sum(
        fftconvolve(x, room_impulse(r, rng, rt60, volume_m3))[: len(x)]
        for x, r in zip(talkers, distances_m, strict=True)
    )
    wet /= np.max(np.abs(wet)) + 1e-9
    noise = rng.standard_normal(len(wet)) * np.sqrt(np.mean(wet**2) / 10 ** (snr_db / 10))
    out = wet + noise
    return (0.5 * out / (np.max(np.abs(out)) + 1e-9)).astype(np.float32)


TALKER_DISTANCES_M = [1.0, 1.3, 1.6, 2.0]  # four people round a table microphone


def crop(ref: list, start: float, end: float) -> list:
    """Reference turns inside [start, end), shifted to start at 0."""
    return [
        (max(s, start) - start, min(e, end) - start, spk)
        for s, e, spk in ref
        if e > start and s < end and min(e, end) - max(s, start) > 0.01
    ]


def dev_clips() -> list[tuple[str, bytes, list]]:
    from app.speech.audio import decode
    from app.speech.der import read_rttm

    out = [
        (
            "phone_call",
            (TESTS / "phone_call.flac").read_bytes(),
            read_rttm((TESTS / "phone_call.rttm").read_text(), uri="phone_call"),
        )
    ]
    rttm = (BENCH / "ami.rttm").read_text()
    for uri in ("ami_dev00", "ami_dev01"):
        data = (BENCH / f"{uri}.flac").read_bytes()
        ref = read_rttm(rttm, uri=uri)
        out.append((uri, data, ref))
        out.append((f"{uri}+tel", _wav(telephone(decode(data))), ref))
    for name, data, ref in list(out):
        if "+tel" not in name:
            out.append((f"{name}+far", _wav(far_field(decode(data))), ref))
    for name, data, ref in list(out):
        if "+" not in name:  # the mixture only: one talker position for everyone
            out.append((f"{name}+room", _wav(meeting_room([decode(data)], [1.5])), ref))
    return out


clips = dev_clips  # the name tests and older scripts import


MEETING_EXCERPTS = ("ami_trn00", "ami_trn03", "ami_trn04", "ami_trn05",
                    "ami_trn06", "ami_trn07", "ami_trn08", "ami_trn09")  # fmt: skip


def meeting_clips() -> list[tuple[str, bytes, list]]:
    """The dev meetings: each excerpt as recorded, by telephone and across a room."""
    from app.speech.audio import decode
    from app.speech.der import read_rttm

    rttm = (BENCH / "ami_meetings.rttm").read_text()
    out = []
    for uri in MEETING_EXCERPTS:
        data = (BENCH / f"{uri}.flac").read_bytes()
        ref = read_rttm(rttm, uri=uri)
        pcm = decode(data)
        out.append((uri, data, ref))
        out.append((f"{uri}+tel", _wav(telephone(pcm)), ref))
        out.append((f"{uri}+room", _wav(meeting_room([pcm], [1.5])), ref))
    return out


def heldout_clips() -> list[tuple[str, bytes, list]]:
    from app.speech.audio import decode
    from app.speech.der import read_rttm

    data = (AMI_MEETING / "mixture.flac").read_bytes()
    ref = read_rttm((AMI_MEETING / "mixture.rttm").read_text())
    pcm = decode(data)
    half = len(pcm) // 2
    # each person's own headset track, so each gets their own distance and echo
    talkers = [decode((AMI_MEETING / f"source{i}.flac").read_bytes()) for i in range(4)]
    return [
        ("ami_meeting", data, ref),
        ("ami_meeting/a", _wav(pcm[:half]), crop(ref, 0.0, half / RATE)),
        ("ami_meeting/b", _wav(pcm[half:]), crop(ref, half / RATE, len(pcm) / RATE)),
        ("ami_meeting+tel", _wav(telephone(pcm)), ref),
        ("ami_meeting+far", _wav(far_field(pcm)), ref),
        ("ami_meeting+room", _wav(meeting_room(talkers, TALKER_DISTANCES_M)), ref),
    ]


def score(diarizer, data: bytes, ref: list, runs: int, options=None) -> dict:
    from app.speech.audio import decode
    from app.speech.der import der
    from app.speech.diarize import turns_of

    times = []
    out = None
    for _ in range(max(runs, 1)):
        t0 = time.perf_counter()
        out = diarizer.diarize_bytes(data, options)
        times.append(time.perf_counter() - t0)
    hyp = turns_of(out.turns)
    audio_s = len(decode(data)) / RATE
    wall = statistics.median(times)
    count = out.speaker_count
    return {
        "found": len(out.speakers),
        "count_error": len(out.speakers) - len({r[2] for r in ref}),
        "confidence": count.confidence if count else None,
        "overlap_s": count.overlap_s if count else 0.0,
        "der": round(der(ref, hyp).der, 4),
        "der_no_overlap": round(der(ref, hyp, skip_overlap=True).der, 4),
        "diarize_s": round(wall, 3),
        "rtf": round(wall / audio_s, 4),
    }


def tune(diarizer) -> None:
    """The dev-set sweep behind the defaults: VAD, window hop, segmentation hop.

    Windows stay 1.5 s: senko's fbank extractor corrupts its heap on longer ones.
    """
    import types

    from app.speech.diarize import _subsegments
    from app.speech.overlap_diarize import OverlapDetector

    items = dev_clips() + meeting_clips()
    for vad in ("silero", "segmentation"):
        diarizer.vad = vad
        for seg_step in (2.5, 5.0):
            diarizer._overlap = OverlapDetector(step_s=seg_step)
            for hop in (0.5, 0.75, 1.0):
                diarizer._senko._generate_subsegments = types.MethodType(
                    _subsegments(hop), diarizer._senko
                )
                rows = [score(diarizer, d, r, 1) | {"clip": n} for n, d, r in items]
                print(
                    json.dumps(
                        {
                            "vad": vad,
                            "segmentation_step_s": seg_step,
                            "hop_s": hop,
                            "mean_der": round(statistics.mean(x["der"] for x in rows), 4),
                            "mean_rtf": round(statistics.mean(x["rtf"] for x in rows), 4),
                            "ders": {x["clip"]: x["der"] for x in rows},
                            "found": {x["clip"]: x["found"] for x in rows},
                        }
                    ),
                    flush=True,
                )


def stt_cost(diarizer, runs: int) -> None:
    """Wall time of the Transcriber's engine against the Diarizer on the dev clips."""
    from app.core.settings import get_settings
    from app.speech.stt import SpeechToText

    stt = SpeechToText.from_settings(get_settings())
    for name, data, _ in dev_clips():
        stt.transcribe_bytes(data)  # warm-up
        t_stt, t_dia = [], []
        for _ in range(runs):
            a = time.perf_counter()
            stt.transcribe_bytes(data)
            t_stt.append(time.perf_counter() - a)
            a = time.perf_counter()
            diarizer.diarize_bytes(data)
            t_dia.append(time.perf_counter() - a)
        ms, md = statistics.median(t_stt), statistics.median(t_dia)
        print(json.dumps({"clip": name, "transcribe_s": round(ms, 3), "diarize_s": round(md, 3),
                          "diarize_vs_transcribe": round(md / ms, 3)}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1, help="Timed runs per clip (median).")
    parser.add_argument("--json", type=Path, help="Write the rows here too.")
    parser.add_argument("--tune", action="store_true", help="Only the dev-set sweep.")
    parser.add_argument("--stt", action="store_true", help="Also time transcription.")
    parser.add_argument(
        "--count-given",
        action="store_true",
        help="Also the default engine told the reference count (min = max speakers).",
    )
    args = parser.parse_args()

    from app.speech.diarize import DiarizeOptions, Diarizer
    from bench.overhead import machine

    if args.tune:
        tune(Diarizer())
        return
    t0 = time.perf_counter()
    from app.speech.overlap_diarize import OverlapDetector

    before = Diarizer(add_unheard=False)  # the default before stitched local speakers
    before._overlap = OverlapDetector(step_s=5.0)
    engines = {"senko": Diarizer(engine="senko"), "windows": before, "counted": Diarizer()}
    load_s = time.perf_counter() - t0
    if args.count_given:  # the same loaded engine, told the answer: is counting the limit?
        engines["count given"] = engines["counted"]
    rows = []
    splits = (
        ("dev", dev_clips()),
        ("dev-meetings", meeting_clips()),
        ("held-out", heldout_clips()),
    )
    for split, items in splits:
        for name, data, ref in items:
            n_ref = len({r[2] for r in ref})
            for engine, diarizer in engines.items():
                told = engine == "count given"
                given = DiarizeOptions(min_speakers=n_ref, max_speakers=n_ref) if told else None
                row = {"split": split, "clip": name, "engine": engine, "ref_speakers": n_ref}
                row |= score(diarizer, data, ref, args.runs, given)
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary: dict = {"machine": machine(), "load_s_all": round(load_s, 2)}
    for split, _ in splits:
        for engine in engines:
            sel = [r for r in rows if r["split"] == split and r["engine"] == engine]
            summary[f"{split}/{engine}"] = {
                "mean_der": round(statistics.mean(r["der"] for r in sel), 4),
                "mean_der_no_overlap": round(statistics.mean(r["der_no_overlap"] for r in sel), 4),
                "count_exact": sum(r["count_error"] == 0 for r in sel),
                "count_within_1": sum(abs(r["count_error"]) <= 1 for r in sel),
                "clips": len(sel),
                "rtf": round(statistics.mean(r["rtf"] for r in sel), 4),
                "s_per_audio_min": round(60 * statistics.mean(r["rtf"] for r in sel), 2),
            }
    print(json.dumps(summary, indent=1))
    print()
    print("| Split | Clip | Ref | Engine | Found | Conf. | DER | DER no ovl. | Overlap | RTF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        conf = "–" if r["confidence"] is None else f"{r['confidence']:.2f}"
        print(
            f"| {r['split']} | `{r['clip']}` | {r['ref_speakers']} | {r['engine']} | "
            f"{r['found']} | {conf} | {100 * r['der']:.1f} % | "
            f"{100 * r['der_no_overlap']:.1f} % | {r['overlap_s']:.1f} s | {r['rtf']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    if args.stt:
        stt_cost(engines["counted"], args.runs)


if __name__ == "__main__":
    main()
