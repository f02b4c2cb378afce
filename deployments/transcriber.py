"""Transcriber deployment: decodes audio and runs faster-whisper (GPU when there is one)."""

from __future__ import annotations

import logging

from ray import serve

from app.settings import get_settings
from app.stt import SpeechToText, SttOptions
from app.schemas import TranscribeOutput

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Transcriber", ray_actor_options={"num_cpus": 1})
class Transcriber:
    def __init__(self) -> None:
        settings = get_settings()
        self.max_duration_s = settings.max_audio_minutes * 60
        self.stt = SpeechToText.from_settings(settings)
        logger.info("Transcriber ready: %s on %s/%s", self.stt.model_name, self.stt.device,
                    self.stt.compute_type)

    def transcribe(self, audio: bytes, options: dict | None = None) -> TranscribeOutput:
        """Sync on purpose: Serve runs it in a thread, and CTranslate2 releases the GIL."""
        opts = SttOptions(**(options or {}))
        return self.stt.transcribe_bytes(audio, opts, max_duration_s=self.max_duration_s)

    def info(self) -> dict:
        return {
            "model": self.stt.model_name,
            "device": self.stt.device,
            "compute_type": self.stt.compute_type,
            "multilingual": self.stt.multilingual,
        }
