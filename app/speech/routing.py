"""Route each recording to the Whisper model for its language.

English keeps the fast English-only model (``AIPP_STT_MODEL``, tiny.en by default);
every other language goes to the multilingual one (``AIPP_STT_MULTILINGUAL_MODEL``,
the bundled Whisper base). The language is the caller's when forced (no detection at
all). Otherwise, by default (``english_first``), the English model transcribes first, as
it always did, and the multilingual model listens only where that transcript is in doubt
(unsure segments, speech left without text): English costs what it cost before. With
``AIPP_STT_LANGUAGE_DETECTION=always`` (or when English is not among the expected
languages) the language is detected on the multilingual model from the first seconds of
speech and a few later windows (:mod:`app.speech.languages`) before anything is
transcribed. A recording whose windows disagree
(code-switching) is transcribed by the multilingual model with per-window language
detection, so the other language's speech is transcribed rather than dropped or
translated. Translation (Whisper's ``translate`` task) always runs on the multilingual
model.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from app.core.schemas import LanguageDetection, LanguageWindow, TranscribeOutput, Transcript
from app.speech.audio import SAMPLE_RATE, decode
from app.speech.languages import (
    CONFIRM_BELOW,
    DOUBT_LOGPROB,
    Detection,
    confirmed,
    detect,
    detect_at,
    doubtful_starts,
    merged,
    speech_regions,
)
from app.speech.stt import SpeechToText, SttOptions, timed_transcribe

TRANSLATE = "translate"
#: Confident English speech (seconds) that makes a recording with another language in
#: it code-switched rather than wholly in the other language.
MIN_ENGLISH_S = 5.0


@dataclasses.dataclass(frozen=True)
class Route:
    """Which engine transcribes, with which options, and what detection found."""

    engine: SpeechToText
    options: SttOptions
    method: str
    detection: Detection | None = None


class LanguageRouter:
    """A speech engine (``app.speech.engines.SpeechEngine``) over two Whisper models.

    ``english`` is None when the configured model is itself multilingual: then every
    recording goes to ``multilingual``, still with detection and the caller's list.
    """

    def __init__(
        self,
        english: SpeechToText | None,
        multilingual: SpeechToText,
        max_windows: int = 3,
        english_first: bool = True,
    ) -> None:
        if not multilingual.multilingual:
            raise ValueError(f"{multilingual.model_name} is not a multilingual Whisper model")
        self.english = english
        self.multi = multilingual
        self.max_windows = max_windows
        self.english_first = english_first
        primary = english or multilingual
        self.model_name = primary.model_name
        self.device = primary.device
        self.compute_type = primary.compute_type
        self.multilingual = True
        self.batch_size = primary.batch_size

    @property
    def batching(self) -> bool:
        return self.multi.batching

    def info(self) -> dict:
        primary = self.english or self.multi
        return primary.info() | {
            "multilingual": True,
            "multilingual_model": self.multi.model_name,
            "language_windows": self.max_windows,
            "language_detection": "english_first" if self.english_first else "always",
        }

    # -- routing ------------------------------------------------------------------

    def route(self, pcm: np.ndarray, options: SttOptions) -> Route:
        """The engine and options for this recording (detects unless the language is set)."""
        opts = options
        if opts.language:
            engine = self._engine_for(opts.language, opts.task)
            return Route(engine, dataclasses.replace(opts, multilingual=False), "forced")
        if not speech_regions(pcm):  # nothing to listen to: the default model, as before
            engine = self._engine_for("en", opts.task)
            return Route(engine, opts, "model")
        found = detect(self.multi.model, pcm, opts.languages, self.max_windows)
        return self._routed(pcm, found, opts)

    def _routed(self, pcm: np.ndarray, found: Detection, opts: SttOptions) -> Route:
        found = confirmed(self.multi.model, pcm, found, opts.languages)
        if found.mixed:
            # Code-switching: per-window detection on the multilingual model. With a list
            # of expected languages, a window is still free to pick another one.
            routed = dataclasses.replace(opts, language=None, multilingual=True)
            return Route(self.multi, routed, "detected", found)
        engine = self._engine_for(found.language, opts.task)
        routed = dataclasses.replace(opts, language=found.language, multilingual=False)
        return Route(engine, routed, "detected", found)

    def _checks_english_first(self, opts: SttOptions) -> bool:
        """English-first applies when nothing is forced and English is expected at all."""
        return (
            self.english_first
            and self.english is not None
            and not opts.language
            and opts.task != TRANSLATE
            and (not opts.languages or "en" in opts.languages)
        )

    def _run(self, pcm: np.ndarray, opts: SttOptions, on_progress) -> tuple[Transcript, str]:
        """The labelled transcript and the model that wrote it.

        English first (the default): the English model transcribes, as it always did; only
        where its transcript is in doubt (:func:`~app.speech.languages.doubtful_starts`)
        does the multilingual model listen, and only when it hears another language is
        the recording transcribed again, by the multilingual model. English speech so
        costs what it cost before (plus a VAD pass over long silent gaps).
        """
        if self._checks_english_first(opts):
            as_english = self._as_english(opts)
            first = self.english.transcribe_pcm(pcm, as_english, on_progress=on_progress)
            return self._after_english(pcm, first, opts, on_progress)
        route = self.route(pcm, opts)
        transcript = route.engine.transcribe_pcm(pcm, route.options, on_progress=on_progress)
        return self._labelled(transcript, route), route.engine.model_name

    @staticmethod
    def _as_english(opts: SttOptions) -> SttOptions:
        return dataclasses.replace(opts, language="en", multilingual=False)

    def _after_english(
        self, pcm: np.ndarray, first: Transcript, opts: SttOptions, on_progress=None
    ) -> tuple[Transcript, str]:
        """The English model's transcript, kept unless another language is heard where
        it was in doubt; then the multilingual model's."""
        english = self.english
        assert english is not None
        as_english = self._as_english(opts)
        starts = doubtful_starts(first, pcm, self.max_windows)
        if not starts:
            return self._labelled(first, Route(english, as_english, "checked")), english.model_name
        found = detect_at(self.multi.model, pcm, starts, opts.languages)
        if found.languages == ["en"]:
            route = Route(english, as_english, "detected", found)
            return self._labelled(first, route), english.model_name
        # Where the English model was sure, listen too (one more pass, paid only when
        # another language was heard): English there makes it code-switching.
        sure = [
            s
            for s in first.segments
            if (s.avg_logprob or 0.0) >= DOUBT_LOGPROB and not s.temperature
        ]
        if sum(s.end - s.start for s in sure) >= MIN_ENGLISH_S:
            # Only the audio it was sure of: a 30 s window from the first sure segment
            # could be mostly another language's speech, or mostly padding at the end of
            # the file. And only a sure answer counts.
            spans = [(int(s.start * SAMPLE_RATE), int(s.end * SAMPLE_RATE)) for s in sure]
            heard = np.concatenate([pcm[a:b] for a, b in spans])
            check = detect_at(self.multi.model, heard, [0.0], opts.languages)
            if check.probability >= CONFIRM_BELOW:
                at = [dataclasses.replace(w, start_s=sure[0].start) for w in check.windows]
                found = merged(found, dataclasses.replace(check, windows=at))
        route = self._routed(pcm, found, opts)
        transcript = route.engine.transcribe_pcm(pcm, route.options, on_progress=on_progress)
        return self._labelled(transcript, route), route.engine.model_name

    def _engine_for(self, language: str, task: str) -> SpeechToText:
        if language == "en" and task != TRANSLATE and self.english is not None:
            return self.english
        return self.multi

    # -- transcription ------------------------------------------------------------

    def transcribe_pcm(
        self, pcm: np.ndarray, options: SttOptions | None = None, on_progress=None
    ) -> Transcript:
        return self._run(pcm, options or SttOptions(), on_progress)[0]

    def _labelled(self, transcript: Transcript, route: Route) -> Transcript:
        """The transcript with its language, as detected or forced, and how it was found.

        A translation's ``language`` is ``en`` (its text); ``detection`` keeps what was spoken.
        """
        found = route.detection
        update: dict = {}
        if found is not None:
            update = {"language": found.language, "language_probability": found.probability}
        elif route.method == "forced":
            update = {"language": route.options.language, "language_probability": 1.0}
        spoken = found.languages if found else [update.get("language", transcript.language)]
        if route.options.task == TRANSLATE:
            update["language"] = "en"
        detection = LanguageDetection(
            method=route.method,
            languages=spoken,
            windows=[
                LanguageWindow(start=w.start_s, language=w.language, probability=w.probability)
                for w in (found.windows if found else [])
            ],
            allowed=route.options.languages,
            model=route.engine.model_name,
            detect_s=found.detect_s if found else 0.0,
            text_check=found.text_check if found else None,
        )
        return transcript.model_copy(update=update | {"detection": detection})

    def transcribe_bytes(
        self,
        data: bytes,
        options: SttOptions | None = None,
        max_duration_s: float | None = None,
        on_progress=None,
    ) -> TranscribeOutput:
        return timed_transcribe(
            data, max_duration_s, lambda pcm: self._run(pcm, options or SttOptions(), on_progress)
        )

    def can_share_batch(self, options: SttOptions) -> bool:
        """A forced language, or English first (the English pass is shared; a recording
        in doubt is then checked, and re-transcribed, on its own)."""
        if self._checks_english_first(options):
            return self.english.can_share_batch(self._as_english(options))
        if not options.language:
            return False
        return self._engine_for(options.language, options.task).can_share_batch(options)

    def transcribe_bytes_many(
        self, items: list[bytes], options: SttOptions, max_duration_s: float | None = None
    ) -> list[TranscribeOutput | Exception]:
        if self._checks_english_first(options):
            outs = self.english.transcribe_bytes_many(
                items, self._as_english(options), max_duration_s
            )
            return [
                out if isinstance(out, Exception) else self._finish(data, out, options)
                for data, out in zip(items, outs, strict=True)
            ]
        if options.language:  # one route for all: the batched pass stays shared
            engine = self._engine_for(options.language, options.task)
            route = Route(engine, dataclasses.replace(options, multilingual=False), "forced")
            outs = engine.transcribe_bytes_many(items, route.options, max_duration_s)
            return [
                out
                if isinstance(out, Exception)
                else out.model_copy(update={"transcript": self._labelled(out.transcript, route)})
                for out in outs
            ]
        results: list[TranscribeOutput | Exception] = []
        for data in items:
            try:
                results.append(self.transcribe_bytes(data, options, max_duration_s))
            except Exception as exc:  # one bad upload must not fail the others
                results.append(exc)
        return results

    def _finish(
        self, data: bytes, out: TranscribeOutput, options: SttOptions
    ) -> TranscribeOutput | Exception:
        """One recording of a shared English pass, checked (and re-routed) on its own."""
        try:
            t0 = time.perf_counter()
            transcript, model = self._after_english(decode(data), out.transcript, options)
            extra = time.perf_counter() - t0
        except Exception as exc:  # one recording's failure is its own
            return exc
        return out.model_copy(
            update={
                "transcript": transcript,
                "model": model,
                "transcribe_s": round(out.transcribe_s + extra, 4),
            }
        )


__all__ = ["LanguageRouter", "Route"]
