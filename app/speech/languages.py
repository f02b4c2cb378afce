"""Spoken-language identification on a multilingual Whisper, cheaply.

Whisper's encoder always reads a 30 s window, so one detection costs one encoder pass
whatever the clip's length. Only speech is looked at (Silero VAD first), and at most
``max_windows`` windows: the first 30 s of speech, then windows spread over the rest,
so a recording that switches language later is still noticed (code-switching) while a
short clip costs exactly one pass. The caller may restrict the choice to the languages
it expects; probabilities are then renormalised over that list.

Where the audio's best guess is unsure, the text decides (:func:`confirmed`): Whisper
base heard a Finnish reading as Latin (0.63) with Finnish not in its first four, yet the
words it wrote for that Latin guess are plainly Finnish to a text identifier (py3langid,
0.998). Confident guesses are left alone, so this costs nothing on most recordings.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from app.core.schemas import Transcript
from app.speech.audio import SAMPLE_RATE

WINDOW_S = 30
#: Speech shorter than this in a later window is not worth its own encoder pass.
MIN_WINDOW_SPEECH_S = 8.0
#: An English-only model's segment below this mean token log-probability may be
#: another language (see :func:`doubtful_starts`).
DOUBT_LOGPROB = -0.7
#: A stretch without segments this long is checked for speech (VAD).
MIN_GAP_S = 3.0
MIN_GAP_SPEECH_S = 2.0
#: Below this audio probability, the language is checked on the words (:func:`confirmed`).
#: Measured (bench/languages.py): right guesses on clips of 10 s or more scored 0.64-1.0,
#: the one wrong one 0.63.
CONFIRM_BELOW = 0.8
#: The text identifier's probability needed to overrule the audio.
TEXT_SURE = 0.9
#: Fewer characters than this say too little about their language.
MIN_TEXT_CHARS = 40


@dataclass(frozen=True)
class WindowLanguage:
    start_s: float
    language: str
    probability: float


@dataclass
class Detection:
    """The languages heard, most speech first; ``windows`` in time order."""

    language: str
    probability: float
    windows: list[WindowLanguage] = field(default_factory=list)
    detect_s: float = 0.0
    #: Set when the words were checked (:func:`confirmed`): what the audio and the text said.
    text_check: dict | None = None

    @property
    def languages(self) -> list[str]:
        counts = Counter(w.language for w in self.windows)
        ranked = sorted(counts, key=lambda lang: (-counts[lang], self._first(lang)))
        return ranked or [self.language]

    def _first(self, language: str) -> int:
        return next(i for i, w in enumerate(self.windows) if w.language == language)

    @property
    def mixed(self) -> bool:
        return len(self.languages) > 1


def speech_regions(pcm: np.ndarray) -> list[tuple[int, int]]:
    """Sample spans holding speech (Silero VAD, the one faster-whisper ships)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(pcm, VadOptions(min_silence_duration_ms=500))
    return [(int(r["start"]), int(r["end"])) for r in regions if r["end"] > r["start"]]


def _windows(pcm: np.ndarray, max_windows: int) -> list[tuple[float, np.ndarray]]:
    """Up to ``max_windows`` windows of 30 s of speech each: (start in the audio, speech)."""
    regions = speech_regions(pcm) or [(0, int(pcm.shape[0]))]
    speech = np.concatenate([pcm[a:b] for a, b in regions]).astype(np.float32, copy=False)
    # Map a position in the speech-only signal back to the recording's clock.
    offsets = np.cumsum([0] + [b - a for a, b in regions])

    def clock(pos: int) -> float:
        i = int(np.searchsorted(offsets, pos, side="right") - 1)
        i = min(i, len(regions) - 1)
        return (regions[i][0] + pos - offsets[i]) / SAMPLE_RATE

    size = WINDOW_S * SAMPLE_RATE
    total = int(speech.shape[0])
    count = max(1, min(max_windows, -(-total // size)))
    if count == 1:
        return [(clock(0), speech[:size])]
    starts = np.linspace(0, max(0, total - size), count).astype(int)
    out = []
    for s in starts:
        chunk = speech[s : s + size]
        if out and chunk.shape[0] < MIN_WINDOW_SPEECH_S * SAMPLE_RATE:
            continue
        out.append((clock(int(s)), chunk))
    return out


def _classify(model, start_s: float, chunk: np.ndarray, allowed: list[str] | None):
    """One encoder pass over (at most) 30 s of audio: its most likely language."""
    from faster_whisper.audio import pad_or_trim

    features = model.feature_extractor(chunk)
    encoded = model.encode(pad_or_trim(features[..., : model.feature_extractor.nb_max_frames]))
    ranked = [(token[2:-2], prob) for token, prob in model.model.detect_language(encoded)[0]]
    if allowed:
        kept = [(lang, p) for lang, p in ranked if lang in allowed]
        norm = sum(p for _, p in kept) or 1.0
        ranked = [(lang, p / norm) for lang, p in kept] or [(allowed[0], 0.0)]
    language, prob = ranked[0]
    return WindowLanguage(round(start_s, 2), language, round(float(prob), 4))


def _detection(windows: list[WindowLanguage], t0: float, spent_s: float = 0.0) -> Detection:
    """The language of most windows (the earliest on a tie) and its best probability."""
    windows = sorted(windows, key=lambda w: w.start_s)
    main = Counter(w.language for w in windows).most_common(1)[0][0]
    prob = max(w.probability for w in windows if w.language == main)
    return Detection(main, prob, windows, round(spent_s + time.perf_counter() - t0, 4))


def merged(a: Detection, b: Detection) -> Detection:
    """Both detections' windows as one."""
    return _detection(a.windows + b.windows, time.perf_counter(), a.detect_s + b.detect_s)


def detect(
    model, pcm: np.ndarray, allowed: list[str] | None = None, max_windows: int = 3
) -> Detection:
    """The language of ``pcm`` (16 kHz mono) on a faster-whisper multilingual ``model``."""
    t0 = time.perf_counter()
    windows = [_classify(model, s, chunk, allowed) for s, chunk in _windows(pcm, max_windows)]
    return _detection(windows, t0)


def detect_at(
    model, pcm: np.ndarray, starts_s: list[float], allowed: list[str] | None = None
) -> Detection:
    """The language of the 30 s of audio from each of ``starts_s`` (the places in doubt)."""
    t0 = time.perf_counter()
    size = WINDOW_S * SAMPLE_RATE
    windows = [
        _classify(model, s, pcm[int(s * SAMPLE_RATE) : int(s * SAMPLE_RATE) + size], allowed)
        for s in starts_s
    ]
    return _detection(windows, t0)


@functools.cache
def _text_identifier():
    """py3langid's model (97 languages, shipped in its wheel), loaded once."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def text_language(text: str, allowed: list[str] | None = None) -> tuple[str, float]:
    """The written language of ``text`` among Whisper's (and ``allowed``), renormalised."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    ranked = [
        (lang, p)
        for lang, p in _text_identifier().rank(text)
        if lang in _LANGUAGE_CODES and (not allowed or lang in allowed)
    ]
    norm = sum(p for _, p in ranked) or 1.0
    return (ranked[0][0], ranked[0][1] / norm) if ranked else ("", 0.0)


def confirmed(model, pcm: np.ndarray, found: Detection, allowed: list[str] | None) -> Detection:
    """``found``, or the language its words are written in when the audio was unsure.

    Below :data:`CONFIRM_BELOW`, the first window of the guessed language is transcribed
    with that language (one decode of at most 30 s) and a text identifier reads it; a
    different language it is sure of (:data:`TEXT_SURE`) replaces the guess. Whisper
    writes the speech it hears even under a wrong language token, so a near language
    confused in the audio is told apart by its spelling. Code-switching is left as heard.
    """
    if found.mixed or found.probability >= CONFIRM_BELOW or not found.windows:
        return found
    t0 = time.perf_counter()
    first = next(w for w in found.windows if w.language == found.language)
    start = int(first.start_s * SAMPLE_RATE)
    segments, _ = model.transcribe(
        pcm[start : start + WINDOW_S * SAMPLE_RATE],
        language=found.language,
        beam_size=1,
        vad_filter=True,
        condition_on_previous_text=False,
    )
    text = " ".join(s.text.strip() for s in segments)
    spent = found.detect_s + time.perf_counter() - t0
    if len(text) < MIN_TEXT_CHARS:
        return dataclasses.replace(found, detect_s=round(spent, 4))
    language, prob = text_language(text, allowed)
    check = {
        "audio_language": found.language,
        "audio_probability": found.probability,
        "text_language": language,
        "text_probability": round(prob, 4),
    }
    if language == found.language or prob < TEXT_SURE:
        return dataclasses.replace(found, detect_s=round(spent, 4), text_check=check)
    windows = [
        dataclasses.replace(w, language=language, probability=round(prob, 4))
        if w.language == found.language
        else w
        for w in found.windows
    ]
    return Detection(language, round(prob, 4), windows, round(spent, 4), check)


def unwritten_speech(segments: list, pcm: np.ndarray) -> list[tuple[int, int]]:
    """Speech the segments left out: for each stretch of :data:`MIN_GAP_S` or more
    without a segment that holds :data:`MIN_GAP_SPEECH_S` of speech (Silero VAD), the
    samples from its first to its last speech."""
    edges = [0.0] + [t for s in segments for t in (s.start, s.end)]
    edges.append(pcm.shape[0] / SAMPLE_RATE)
    out = []
    for a, b in zip(edges[0::2], edges[1::2], strict=True):
        if b - a < MIN_GAP_S:
            continue
        lo = int(a * SAMPLE_RATE)
        regions = speech_regions(pcm[lo : int(b * SAMPLE_RATE)])
        if sum(e - s for s, e in regions) >= MIN_GAP_SPEECH_S * SAMPLE_RATE:
            out.append((lo + regions[0][0], lo + regions[-1][1]))
    return out


def doubtful_starts(transcript: Transcript, pcm: np.ndarray, max_windows: int) -> list[float]:
    """Where an English-only model's transcript may hide another language: segments it
    was unsure of (``avg_logprob`` below :data:`DOUBT_LOGPROB`, or written only at a
    fallback temperature), and speech it wrote nothing for (a gap of :data:`MIN_GAP_S`
    or more with speech in it). Start times in seconds, 30 s apart at least, at most
    ``max_windows``; [] when all looks English.

    Measured (bench/languages.py): tiny.en's segments on English speech had
    avg_logprob -0.12 to -0.78, on German, French and Latvian -0.89 to -1.29; on the
    German half of multilingual.mp3 it wrote nothing for 23 s of speech. On a French
    reading, one run in four of tiny.en's temperature fallback sampled "Bye bye." twelve
    times at avg_logprob -0.5: a greedy decode that failed Whisper's own checks is doubt
    enough, whatever the sampled text's log-probability.
    """
    starts = [
        s.start
        for s in transcript.segments
        if (s.avg_logprob or 0.0) < DOUBT_LOGPROB or (s.temperature or 0.0) > 0.0
    ]
    starts += [a / SAMPLE_RATE for a, _ in unwritten_speech(transcript.segments, pcm)]
    picked: list[float] = []
    for start in sorted(starts):
        if not picked or start - picked[-1] >= WINDOW_S:
            picked.append(round(start, 2))
    return picked[:max_windows]


__all__ = [
    "Detection",
    "WindowLanguage",
    "confirmed",
    "detect",
    "detect_at",
    "doubtful_starts",
    "merged",
    "speech_regions",
    "text_language",
    "unwritten_speech",
]
