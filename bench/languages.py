"""Languages: identification accuracy, WER by language, and what detection costs English.

1. Language ID (``app/speech/languages.py`` on the bundled Whisper base, as the
   Transcriber runs it) on real recordings of at least 10 s, and, apart, on the short
   clips we have (< 10 s). Sources: ``bench/data/languages/SOURCES.md``.
2. WER by language, where a reference text exists, for the model the router picks.
3. English cost: the same English recordings through today's path (``SpeechToText``
   with tiny.en, no detection), through the router by default (English first: tiny.en,
   detection only where in doubt), the router detecting always (first seconds on
   Whisper base, then tiny.en), and the router with ``language=en`` forced;
   interleaved run by run, medians, ratios to the baseline.

    python -m bench.languages --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.overhead import DATA, machine
from bench.quality import JFK_REF, edit_distance, wer_words

LANG_DATA = Path(__file__).resolve().parent / "data" / "languages"
RATE = 16000
MEETINGS = DATA / "meetings"


def _pcm(path: Path, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    from app.speech.audio import decode

    pcm = decode(path.read_bytes())
    return pcm[int(start_s * RATE) : None if end_s is None else int(end_s * RATE)]


def clips() -> list[tuple[str, str, np.ndarray]]:
    """(name, language, 16 kHz audio): real speech, cut where a file holds more."""
    out = [
        ("jfk.flac", "en", _pcm(DATA / "jfk.flac")),
        ("multilingual.mp3 0-29.6 s", "en", _pcm(DATA / "multilingual.mp3", 0, 29.6)),
        ("german_licence.ogg", "de", _pcm(DATA / "german_licence.ogg")),
        ("phone_call.flac", "en", _pcm(DATA / "phone_call.flac")),
    ]
    for name, starts in (
        ("w3c_ccg_2024-01-23.ogg", (60, 300, 600)),
        ("w3c_ccg_traceability_2023-06-27.ogg", (60, 240)),
    ):
        pcm = _pcm(MEETINGS / name)
        out += [(f"{name} {s}-{s + 30} s", "en", pcm[s * RATE : (s + 30) * RATE]) for s in starts]
    out += [
        ("buzz_french.mp3", "fr", _pcm(LANG_DATA / "buzz_french.mp3")),
        ("buzz_latvian.wav", "lv", _pcm(LANG_DATA / "buzz_latvian.wav")),
        ("hotwords.mp3", "en", _pcm(DATA / "hotwords.mp3")),
    ]
    out += [(name, lang, _pcm(LANG_DATA / name)) for name, lang in READINGS]
    return out


#: Real recordings of 18-30 s in five more languages (bench/data/languages/SOURCES.md);
#: the ``readalongs_*`` ones have a reference text in references.json (by file stem).
READINGS = [
    ("whisperct2_ca.ogg", "ca"),
    ("aeneas_es.ogg", "es"),
    ("readalongs_fr.ogg", "fr"),
    ("librivox_udhr_fr.ogg", "fr"),
    ("readalongs_da.ogg", "da"),
    ("librivox_udhr_da.ogg", "da"),
    ("readalongs_fi.ogg", "fi"),
    ("readalongs2_fi.ogg", "fi"),
]


def wer(ref: str, hyp: str) -> float:
    r, h = wer_words(ref), wer_words(hyp)
    return edit_distance(r, h) / max(1, len(r))


def language_id(router, windows: int) -> dict:
    """``detected``: as shipped, the audio's guess checked on its words when unsure
    (``app.speech.languages.confirmed``); ``audio``: the audio's guess alone (the
    previous code, the baseline)."""
    from app.speech.languages import confirmed, detect

    rows = []
    for name, lang, pcm in clips():
        heard = detect(router.multi.model, pcm, None, windows)
        found = confirmed(router.multi.model, pcm, heard, None)
        seconds = round(pcm.shape[0] / RATE, 1)
        rows.append(
            {
                "clip": name,
                "seconds": seconds,
                "truth": lang,
                "detected": found.language,
                "probability": found.probability,
                "audio": heard.language,
                "audio_probability": heard.probability,
                "audio_detect_s": heard.detect_s,
                "detect_s": found.detect_s,
                "text_check": found.text_check,
                "long": seconds >= 10,
            }
        )
    longs = [r for r in rows if r["long"]]
    shorts = [r for r in rows if not r["long"]]

    def accuracy(rs, key="detected"):
        return round(sum(r["truth"] == r[key] for r in rs) / max(1, len(rs)), 3)

    mixed = detect(router.multi.model, _pcm(DATA / "multilingual.mp3"), None, windows)
    routed = []  # the default path (English first): the language the transcript gets
    for name, lang, pcm in clips():
        t = router.transcribe_pcm(pcm)
        routed.append(
            {
                "clip": name,
                "truth": lang,
                "language": t.language,
                "method": t.detection.method,
                "model": t.detection.model,
                "long": pcm.shape[0] / RATE >= 10,
            }
        )
    return {
        "clips": rows,
        "accuracy_ge_10s": accuracy(longs),
        "audio_only_accuracy_ge_10s": accuracy(longs, "audio"),
        "n_ge_10s": len(longs),
        "languages_ge_10s": sorted({r["truth"] for r in longs}),
        "accuracy_short": accuracy(shorts),
        "audio_only_accuracy_short": accuracy(shorts, "audio"),
        "n_short": len(shorts),
        "code_switch_multilingual_mp3": mixed.languages,
        "routed": routed,
        "routed_accuracy_ge_10s": round(
            sum(r["truth"] == r["language"] for r in routed if r["long"])
            / max(1, sum(r["long"] for r in routed)),
            3,
        ),
        "routed_accuracy_short": round(
            sum(r["truth"] == r["language"] for r in routed if not r["long"])
            / max(1, sum(not r["long"] for r in routed)),
            3,
        ),
    }


def wer_by_language(router) -> dict:
    from app.speech.stt import SttOptions

    refs = json.loads((LANG_DATA / "references.json").read_text())
    out = {}
    jfk = router.transcribe_pcm(_pcm(DATA / "jfk.flac"), SttOptions())
    out["en jfk.flac"] = {"wer": round(wer(JFK_REF, jfk.text), 3), "model": jfk.detection.model}
    mit = router.transcribe_pcm(_pcm(DATA / "multilingual.mp3", 0, 29.6), SttOptions())
    out["en multilingual.mp3 0-29.6 s"] = {
        "wer": round(wer(refs["mit_licence_en"], mit.text), 3),
        "model": mit.detection.model,
    }
    for name, lang in READINGS:
        ref = refs.get(Path(name).stem)
        if ref is None:
            continue
        t = router.transcribe_pcm(_pcm(LANG_DATA / name), SttOptions())
        out[f"{lang} {name}"] = {
            "wer": round(wer(ref, t.text), 3),
            "model": t.detection.model,
            "language": t.language,
            "text": t.text,
        }
    return out


def english_cost(baseline, router, runs: int) -> dict:
    """Medians of today's path, the router (English first, and detecting always), and the
    router with en forced."""
    from app.speech.routing import LanguageRouter
    from app.speech.stt import SttOptions

    always = LanguageRouter(router.english, router.multi, router.max_windows, english_first=False)

    recordings = {
        "jfk.flac (11 s)": _pcm(DATA / "jfk.flac"),
        "w3c_ccg_traceability_2022-08-09.ogg (3.7 min)": _pcm(
            MEETINGS / "w3c_ccg_traceability_2022-08-09.ogg"
        ),
    }
    paths = {
        "today (tiny.en)": lambda p: baseline.transcribe_pcm(p, SttOptions()),
        "router, English first (default)": lambda p: router.transcribe_pcm(p, SttOptions()),
        "router, detection always": lambda p: always.transcribe_pcm(p, SttOptions()),
        "router, language=en": lambda p: router.transcribe_pcm(p, SttOptions(language="en")),
    }
    out = {}
    for name, pcm in recordings.items():
        times: dict[str, list[float]] = {k: [] for k in paths}
        texts = {}
        for _ in range(runs):
            for label, run in paths.items():
                t0 = time.perf_counter()
                texts[label] = run(pcm).text
                times[label].append(time.perf_counter() - t0)
        base = statistics.median(times["today (tiny.en)"])
        out[name] = {
            label: {
                "median_s": round(statistics.median(ts), 3),
                "ratio": round(statistics.median(ts) / base, 3),
            }
            for label, ts in times.items()
        }
        out[name]["same_text"] = len(set(texts.values())) == 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    from app.core.model_assets import resolve_stt_model
    from app.core.settings import Settings
    from app.speech.engines import speech_engine_from_settings
    from app.speech.stt import SpeechToText

    settings = Settings(stt_language_windows=args.windows)
    router = speech_engine_from_settings(settings)
    tiny = resolve_stt_model("bundled:tiny.en", settings.cache_dir)
    baseline = SpeechToText(tiny.path, tiny.name)
    report = {
        "machine": machine(),
        "language_id": language_id(router, args.windows),
        "wer": wer_by_language(router),
        "english_cost": english_cost(baseline, router, args.runs),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
