"""PII redaction: recall and precision on labelled text, and its time per audio minute.

Data (bench/data/pii/SOURCES.md):

- ``presidio``: presidio-research's synthetic PII set (``synth_dataset_v2``, 1,500
  template sentences filled with fake names, numbers and addresses, MIT). Split by id:
  even ids are the half we looked at while writing the rules (``dev``), odd ids the
  half reported (``held``); the set has no official test split.
- ``conll``: CoNLL-2003 English ``PER`` entities, real news text with real names: the
  first 600 sentences of the development split (``valid.txt``), which we tuned the name
  rules on, and sentences 5,000-5,599 of the training split, which we did not look at
  (``held``). Never the test split.
- ``spoken``: each phone, card and SSN of the held-out half, rewritten in its own
  sentence as Whisper writes spoken digits ("four one five, five five five, ...").

A labelled entity counts as found when spans of its type cover at least half of its
characters (``hidden`` counts spans of any type: what a reader no longer sees). A
found span is correct when it overlaps a labelled entity of its type. Time: the
redactor over the transcript of real speech (tests/data/phone_call.flac, transcribed
in the same run with the service's default Whisper, whose time is the baseline), and
over the 52-minute W3C call's transcript (tests/data/transcripts), per audio minute.

    python -m bench.pii
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

from app.core.pii_terms import PiiEntity
from app.privacy.detect import PiiDetector, load_detector

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / "data" / "pii"

#: presidio-research labels -> ours (labels we do not redact are scored for precision only).
LABELS = {
    "PERSON": PiiEntity.PERSON,
    "PHONE_NUMBER": PiiEntity.PHONE_NUMBER,
    "EMAIL_ADDRESS": PiiEntity.EMAIL_ADDRESS,
    "CREDIT_CARD": PiiEntity.CREDIT_CARD,
    "US_SSN": PiiEntity.US_SSN,
    "IBAN_CODE": PiiEntity.IBAN,
    "STREET_ADDRESS": PiiEntity.ADDRESS,
    "ZIP_CODE": PiiEntity.ADDRESS,
}
#: An address span that runs on into the city or state is still on the address.
ALSO_RIGHT = {PiiEntity.ADDRESS: {"GPE"}, PiiEntity.DATE_OF_BIRTH: {"DATE_TIME"}}
PATTERN = (
    PiiEntity.PHONE_NUMBER,
    PiiEntity.EMAIL_ADDRESS,
    PiiEntity.CREDIT_CARD,
    PiiEntity.US_SSN,
    PiiEntity.IBAN,
)
_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def spoken(value: str) -> str:
    """Digits as Whisper writes them spoken: words, groups kept, groups split by commas."""
    groups = [g for g in re.split(r"[^0-9]+", value) if g]
    return ", ".join(" ".join(_DIGIT_WORDS[int(d)] for d in g) for g in groups)


def spoken_set(rows: list[dict]) -> list[dict]:
    """Each phone, card and SSN rewritten as spoken digits in its own sentence (an
    extension is dropped); the sentence's other labels move with the text."""
    out = []
    for row in rows:
        for start, end, label in row["spans"]:
            if label not in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
                continue
            value = row["text"][start:end]
            if "x" in value.lower():
                value = value[: value.lower().index("x")]
            words = spoken(value)
            text = row["text"][:start] + words + row["text"][end:]
            shift = len(words) - (end - start)
            spans = [[start, start + len(words), label]] + [
                [s + shift * (s >= end), e + shift * (e >= end), other]
                for s, e, other in row["spans"]
                if (s, e) != (start, end)
            ]
            out.append({"text": text, "spans": spans, "only": [start, start + len(words)]})
    return out


def score(rows: list[dict], detector, wanted: tuple[PiiEntity, ...]) -> dict:
    found, hidden, total = defaultdict(int), defaultdict(int), defaultdict(int)
    right, predicted = defaultdict(int), defaultdict(int)
    t0 = time.perf_counter()
    chars = 0
    for row in rows:
        text = row["text"]
        chars += len(text)
        spans = detector.find(text, wanted)
        gold = [(s, e, LABELS.get(label), label) for s, e, label in row["spans"]]
        for start, end, ours, _ in gold:
            if ours not in wanted or row.get("only", [start, end]) != [start, end]:
                continue
            total[ours] += 1
            need = {i for i in range(start, end) if not text[i].isspace()}
            typed = {i for sp in spans if sp.entity == ours for i in range(sp.start, sp.end)}
            anyone = {i for sp in spans for i in range(sp.start, sp.end)}
            found[ours] += len(need & typed) * 2 >= len(need)
            hidden[ours] += len(need & anyone) * 2 >= len(need)
        for sp in spans:
            predicted[sp.entity] += 1
            ok = {sp.entity.value} | ALSO_RIGHT.get(sp.entity, set())
            right[sp.entity] += any(
                (ours == sp.entity or label in ok) and s < sp.end and e > sp.start
                for s, e, ours, label in gold
            )
    per = {}
    for entity in wanted:
        per[entity.value] = {
            "n": total[entity],
            "recall": round(found[entity] / total[entity], 3) if total[entity] else None,
            "hidden": round(hidden[entity] / total[entity], 3) if total[entity] else None,
            "predicted": predicted[entity],
            "precision": round(right[entity] / predicted[entity], 3) if predicted[entity] else None,
        }
    pat = [e for e in PATTERN if e in wanted and total[e]]
    if pat:
        per["pattern_entities"] = {
            "n": sum(total[e] for e in pat),
            "recall": round(sum(found[e] for e in pat) / sum(total[e] for e in pat), 3),
            "precision": round(
                sum(right[e] for e in pat) / max(1, sum(predicted[e] for e in pat)), 3
            ),
        }
    per["_speed"] = {"chars": chars, "s": round(time.perf_counter() - t0, 3)}
    return per


def timing(detector, runs: int, baseline=None) -> dict:
    """Redaction of real transcripts per audio minute, against transcribing the call."""
    import tempfile

    from faster_whisper import WhisperModel

    from app.core.model_assets import BUNDLED_PREFIX, resolve_stt_model
    from app.core.schemas import Segment, Transcript, Word
    from app.privacy.redact import Redactor, redact_transcript
    from tests.transcript_fixtures import turns

    model = resolve_stt_model(
        BUNDLED_PREFIX + "tiny.en", Path(tempfile.gettempdir()) / "aipp-models"
    )
    whisper = WhisperModel(model.path, device="cpu", compute_type="int8", cpu_threads=2)
    audio = REPO / "tests" / "data" / "phone_call.flac"
    stt_s, redact_s, meeting_s, base_meeting_s = [], [], [], []
    rows = turns()
    meeting = Transcript(
        text=" ".join(r["text"] for r in rows),
        language="en",
        duration_s=rows[-1]["end"],
        segments=[
            Segment(id=i, start=r["start"], end=r["end"], text=r["text"])
            for i, r in enumerate(rows)
        ],
    )
    for _ in range(runs):
        t0 = time.perf_counter()
        segs, info = whisper.transcribe(str(audio), word_timestamps=True, beam_size=1)
        segs = list(segs)
        stt_s.append(time.perf_counter() - t0)
        call = Transcript(
            text=" ".join(s.text.strip() for s in segs),
            language="en",
            duration_s=info.duration,
            segments=[
                Segment(
                    id=i,
                    start=s.start,
                    end=s.end,
                    text=s.text.strip(),
                    words=[Word(word=w.word, start=w.start, end=w.end) for w in s.words],
                )
                for i, s in enumerate(segs)
            ],
        )
        t0 = time.perf_counter()
        redacted, spans = redact_transcript(call, Redactor(detector=detector))
        redact_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        redact_transcript(meeting, Redactor(detector=detector))
        meeting_s.append(time.perf_counter() - t0)
        if baseline is not None:
            t0 = time.perf_counter()
            redact_transcript(meeting, Redactor(detector=baseline))
            base_meeting_s.append(time.perf_counter() - t0)
    call_min = info.duration / 60
    return {
        "call_audio_s": round(info.duration, 1),
        "call_transcribe_s": round(statistics.median(stt_s), 3),
        "call_redact_s": round(statistics.median(redact_s), 3),
        "redact_over_transcribe": round(statistics.median(redact_s) / statistics.median(stt_s), 3),
        "call_redact_s_per_audio_min": round(statistics.median(redact_s) / call_min, 3),
        "meeting_audio_min": round(meeting.duration_s / 60, 1),
        "meeting_redact_s": round(statistics.median(meeting_s), 3),
        "meeting_redact_s_per_audio_min": round(
            statistics.median(meeting_s) / (meeting.duration_s / 60), 4
        ),
        "baseline_meeting_redact_s": (
            round(statistics.median(base_meeting_s), 3) if base_meeting_s else None
        ),
        "call_redacted_text": redacted.text,
        "call_audio_spans": spans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pii.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    detector = load_detector()
    load_s = time.perf_counter() - t0
    # The previous code, in the same run: spaCy and the rules without the PII classifier.
    baseline = PiiDetector(detector.nlp, None)
    presidio = load("presidio_synth_v2.jsonl")
    held = [r for r in presidio if r["id"] % 2 == 1]
    dev = [r for r in presidio if r["id"] % 2 == 0]
    everything = tuple(PiiEntity)
    report = {
        "load_s": round(load_s, 2),
        "presidio_held": score(held, detector, everything),
        "presidio_dev": score(dev, detector, everything),
        "conll_dev_person": score(load("conll2003_dev_600.jsonl"), detector, (PiiEntity.PERSON,)),
        "conll_train_held_person": score(
            load("conll2003_train_5000_5600.jsonl"), detector, (PiiEntity.PERSON,)
        ),
        "spoken_numbers_held": score(spoken_set(held), detector, everything),
        "baseline_spacy_rules_only": {
            "presidio_held": score(held, baseline, everything),
            "conll_dev_person": score(
                load("conll2003_dev_600.jsonl"), baseline, (PiiEntity.PERSON,)
            ),
            "conll_train_held_person": score(
                load("conll2003_train_5000_5600.jsonl"), baseline, (PiiEntity.PERSON,)
            ),
        },
        "timing": timing(detector, args.runs, baseline),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
