"""Transcriber deployment: decodes audio and runs faster-whisper (GPU when there is one).

On a GPU, concurrent requests are gathered with ``@serve.batch`` and transcribed in
one batched pass (their speech chunks share the decoder's batches), so one GPU
serves many files at once; ``max_ongoing_requests`` in serve_config.gpu.yaml lets
that many in. On CPU each request runs on its own (sequential decoding is faster
there, and CTranslate2 already uses every core it is given).

It talks to nobody but its caller: progress goes back over the handle
(:meth:`Transcriber.transcribe_stream`), and the caller decides what to tell whom.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator

from ray import serve

from app.core import metrics
from app.core.logs import get_logger, log_context
from app.core.schemas import TranscribeOutput
from app.core.settings import get_settings
from app.speech.engines import (
    ProgressFn,
    SpeechEngine,
    TranscribeProgress,
    speech_engine_from_settings,
)
from app.speech.stt import SttOptions

logger = logging.getLogger("ray.serve")
log = get_logger()


@serve.deployment(name="Transcriber", ray_actor_options={"num_cpus": 1})
class Transcriber:
    def __init__(self) -> None:
        settings = get_settings()
        self.max_duration_s = settings.max_audio_minutes * 60
        self.stt: SpeechEngine = speech_engine_from_settings(settings)
        self.batching = self.stt.batching
        if self.batching:
            self._transcribe_batch.set_max_batch_size(settings.stt_batch_size)
        logger.info(
            "Transcriber ready: %s on %s/%s",
            self.stt.model_name,
            self.stt.device,
            self.stt.compute_type,
        )

    async def transcribe(
        self, audio: bytes, options: SttOptions | None = None, task_id: str | None = None
    ) -> TranscribeOutput:
        """One recording, no progress (the batched GPU path when it applies)."""
        return await self._transcribe(audio, options or SttOptions(), task_id, None)

    async def transcribe_stream(
        self,
        audio: bytes,
        options: SttOptions | None = None,
        task_id: str | None = None,
        min_interval_s: float = 1.0,
    ) -> AsyncIterator[TranscribeProgress | TranscribeOutput]:
        """Progress ticks (at most one per ``min_interval_s``), then the ``TranscribeOutput``.

        Call it through ``handle.options(stream=True)``. On the batched GPU path there
        are no ticks (the pass is shared), only the output.
        """
        loop = asyncio.get_running_loop()
        ticks: asyncio.Queue[TranscribeProgress] = asyncio.Queue()
        last = 0.0

        def on_progress(done_s: float, total_s: float) -> None:  # the engine's thread
            nonlocal last
            now = time.monotonic()
            if now - last < min_interval_s:
                return
            last = now
            tick = TranscribeProgress(round(done_s, 2), round(total_s, 2))
            loop.call_soon_threadsafe(ticks.put_nowait, tick)

        work = asyncio.ensure_future(
            self._transcribe(audio, options or SttOptions(), task_id, on_progress)
        )
        next_tick: asyncio.Future[TranscribeProgress] | None = None
        try:
            while not work.done():
                next_tick = asyncio.ensure_future(ticks.get())
                await asyncio.wait({work, next_tick}, return_when=asyncio.FIRST_COMPLETED)
                if next_tick.done():
                    yield next_tick.result()
            out = work.result()
        finally:
            # The caller went away: stop waiting (a running thread finishes on its own).
            for pending in (work, next_tick):
                if pending is not None and not pending.done():
                    pending.cancel()
        yield out

    async def _transcribe(
        self,
        audio: bytes,
        options: SttOptions,
        task_id: str | None,
        on_progress: ProgressFn | None,
    ) -> TranscribeOutput:
        """The work runs in a thread (CTranslate2 releases the GIL)."""
        with log_context(task_id=task_id):
            if self.batching and self.stt.can_share_batch(options):
                key = json.dumps(dataclasses.asdict(options), sort_keys=True)
                out = await self._transcribe_batch(audio, key)
                if isinstance(out, BaseException):
                    raise out
            else:
                out = await asyncio.to_thread(
                    self.stt.transcribe_bytes,
                    audio,
                    options,
                    max_duration_s=self.max_duration_s,
                    on_progress=on_progress,
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
        :meth:`_transcribe` for that caller only); the others are unaffected.
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

    def info(self) -> dict:
        return self.stt.info() | {"batched": self.batching}
