"""Transcriber deployment: decodes audio and runs faster-whisper (GPU when there is one).

On a GPU, concurrent requests are gathered with ``@serve.batch`` and transcribed in
one batched pass (their speech chunks share the decoder's batches), so one GPU
serves many files at once; ``max_ongoing_requests`` in serve_config.gpu.yaml lets
that many in. On CPU each request runs on its own (sequential decoding is faster
there, and CTranslate2 already uses every core it is given).
"""

from __future__ import annotations

import asyncio
import json
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
        self.batching = self.stt.batched is not None
        if self.batching:
            self._transcribe_batch.set_max_batch_size(settings.stt_batch_size)
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

    async def transcribe(self, audio: bytes, options: dict | None = None) -> TranscribeOutput:
        """One recording. The work runs in a thread (CTranslate2 releases the GIL).

        ``options`` holds SttOptions fields, plus an optional ``task_id`` for the logs.
        """
        options = dict(options or {})
        task_id = options.pop("task_id", None)
        stt_options = SttOptions(**options)
        with log_context(task_id=task_id):
            if self.batching and self.stt.can_share_batch(stt_options):
                out = await self._transcribe_batch(audio, json.dumps(options, sort_keys=True))
                if isinstance(out, BaseException):
                    raise out
            else:
                progress = self._progress_publisher(task_id) if task_id and self.redis else None
                out = await asyncio.to_thread(
                    self.stt.transcribe_bytes,
                    audio,
                    stt_options,
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

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _transcribe_batch(
        self, audios: list[bytes], option_keys: list[str]
    ) -> list[TranscribeOutput | Exception]:
        """GPU: the requests gathered in the last 50 ms, one batched pass per options.

        A request whose audio fails to decode gets its exception back (raised by
        :meth:`transcribe` for that caller only); the others are unaffected.
        """
        results: list[TranscribeOutput | Exception | None] = [None] * len(audios)
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(option_keys):
            groups.setdefault(key, []).append(i)
        for key, idxs in groups.items():
            try:
                outs = await asyncio.to_thread(
                    self.stt.transcribe_bytes_many,
                    [audios[i] for i in idxs],
                    SttOptions(**json.loads(key)),
                    self.max_duration_s,
                )
            except Exception as exc:  # the model failed: every request of the group
                outs = [exc] * len(idxs)
            for i, out in zip(idxs, outs, strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

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
            "batched": self.batching,
            "batch_size": self.stt.batch_size,
        }
