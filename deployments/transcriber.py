"""Transcriber deployment: decodes audio and runs faster-whisper (GPU when there is one)."""

from __future__ import annotations

import logging
import time

from ray import serve

from app.core import metrics
from app.core.logs import get_logger, log_context
from app.core.schemas import TranscribeOutput
from app.core.settings import get_settings
from app.speech.stt import SpeechToText, SttOptions

logger = logging.getLogger("ray.serve")
log = get_logger()


@serve.deployment(name="Transcriber", ray_actor_options={"num_cpus": 1})
class Transcriber:
    def __init__(self) -> None:
        settings = get_settings()
        self.max_duration_s = settings.max_audio_minutes * 60
        self.stt = SpeechToText.from_settings(settings)
        self.redis = None
        if settings.redis_url:
            from app.storage.redis import connect

            self.redis = connect(settings.redis_url)
        logger.info(
            "Transcriber ready: %s on %s/%s",
            self.stt.model_name,
            self.stt.device,
            self.stt.compute_type,
        )

    def transcribe(self, audio: bytes, options: dict | None = None) -> TranscribeOutput:
        """Sync on purpose: Serve runs it in a thread, and CTranslate2 releases the GIL.

        ``options`` holds SttOptions fields, plus an optional ``task_id`` for the logs.
        """
        options = dict(options or {})
        task_id = options.pop("task_id", None)
        progress = self._progress_publisher(task_id) if task_id and self.redis else None
        with log_context(task_id=task_id):
            out = self.stt.transcribe_bytes(
                audio,
                SttOptions(**options),
                max_duration_s=self.max_duration_s,
                on_progress=progress,
            )
            audio_s = out.transcript.duration_s
            metrics.record_transcription(out.decode_s, out.transcribe_s, audio_s)
            log.info(
                "transcribed %.1fs of audio (decode %.3fs, transcribe %.3fs, %d segments)",
                audio_s,
                out.decode_s,
                out.transcribe_s,
                len(out.transcript.segments),
            )
        return out

    def _progress_publisher(self, task_id: str):
        """Publish "transcribed s / total s" to the task's event channel, at most 1/s."""
        from app.storage.redis import events

        last = {"t": 0.0}

        def publish(done_s: float, total_s: float) -> None:
            now = time.monotonic()
            if now - last["t"] < 1.0:
                return
            last["t"] = now
            events.publish(
                self.redis,
                task_id,
                {
                    "status": "transcribing",
                    "progress": {"transcribed_s": round(done_s, 2), "total_s": round(total_s, 2)},
                },
            )

        return publish

    def info(self) -> dict:
        return {
            "model": self.stt.model_name,
            "device": self.stt.device,
            "compute_type": self.stt.compute_type,
            "multilingual": self.stt.multilingual,
        }
