"""The audio → transcript → summary flow over DeploymentHandles, shared by every route."""

from __future__ import annotations

import asyncio
import time

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from app.core.schemas import (
    DiarizeOutput,
    ModelIds,
    SummarizeOutput,
    SummarizeResult,
    Timings,
    TranscribeOutput,
)
from app.speech.audio import AudioError
from app.speech.diarize import assign_speakers, display_names, speaker_text


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps a replica's exception; give callers the original (e.g. AudioError)."""
    while isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


class Pipeline:
    def __init__(
        self,
        transcriber: DeploymentHandle,
        summarizer: DeploymentHandle,
        diarizer: DeploymentHandle | None = None,
    ) -> None:
        self.transcriber = transcriber
        self.summarizer = summarizer
        self.diarizer = diarizer

    async def diarize(
        self, audio: bytes, options: dict | None = None, task_id: str | None = None
    ) -> DiarizeOutput:
        if self.diarizer is None:
            raise RuntimeError("this application has no Diarizer deployment")
        try:
            opts = dict(options or {})
            if task_id:
                opts["task_id"] = task_id
            return await self.diarizer.diarize.remote(audio, opts)
        except RayTaskError as exc:
            cause = unwrap(exc)
            if isinstance(cause, AudioError):
                raise cause from None
            raise

    async def transcribe(
        self, audio: bytes, options: dict | None = None, task_id: str | None = None
    ) -> TranscribeOutput:
        try:
            opts = dict(options or {})
            if task_id:
                opts["task_id"] = task_id  # for log lines and progress events
            return await self.transcriber.transcribe.remote(audio, opts)
        except RayTaskError as exc:
            cause = unwrap(exc)
            if isinstance(cause, AudioError):
                raise cause from None
            raise

    async def summarize(
        self,
        text: str,
        instruction: str | None = None,
        task_id: str | None = None,
        segments: list[dict] | None = None,
        duration_s: float | None = None,
    ) -> SummarizeOutput:
        """Segments (id, start, end, text) let the summary cite evidence with timestamps."""
        if segments is None:  # the text-only path: grounded on sentences, no timestamps
            return await self.summarizer.summarize.remote(text, instruction, task_id=task_id)
        return await self.summarizer.summarize.remote(
            text, instruction, task_id=task_id, segments=segments, duration_s=duration_s
        )

    async def run(
        self,
        audio: bytes,
        language: str | None = None,
        instruction: str | None = None,
        on_stage=None,
        task_id: str | None = None,
        diarize: dict | None = None,
    ) -> SummarizeResult:
        """Both stages; ``on_stage(name)`` is awaited before each (for task state and events).

        With ``diarize`` (DiarizeOptions fields, plus ``words``), the Diarizer runs on the
        same audio in parallel with the Transcriber; the turns are merged into the
        transcript by time overlap and the summarizer reads ``Speaker N: ...`` lines.
        """
        t0 = time.perf_counter()
        if on_stage is not None:
            await on_stage("transcribing")
        stt_opts: dict = {"language": language} if language else {}
        diar = None
        if diarize is not None:
            diar_opts = dict(diarize)
            words = bool(diar_opts.pop("words", False))
            stt_opts["word_timestamps"] = True  # split segments at the word a speaker changes
            stt, diar = await asyncio.gather(
                self.transcribe(audio, stt_opts, task_id),
                self.diarize(audio, diar_opts, task_id),
            )
            transcript = assign_speakers(stt.transcript, diar, words=words)
        else:
            stt = await self.transcribe(audio, stt_opts or None, task_id)
            transcript = stt.transcript
        if on_stage is not None:
            await on_stage("summarizing")
        names = display_names(transcript) if diar is not None else {}
        segments = [
            {"id": s.id, "start": s.start, "end": s.end, "text": s.text}
            | ({"speaker": names.get(s.speaker, s.speaker)} if s.speaker else {})
            for s in transcript.segments
        ]
        text = speaker_text(transcript) if diar is not None else transcript.text
        llm = await self.summarize(text, instruction, task_id, segments, transcript.duration_s)
        return SummarizeResult(
            transcript=transcript,
            summary=llm.summary,
            models=ModelIds(stt=stt.model, llm=llm.model, diarizer=diar.model if diar else None),
            timings=Timings(
                decode_s=stt.decode_s,
                transcribe_s=stt.transcribe_s,
                summarize_s=llm.summarize_s,
                diarize_s=diar.diarize_s if diar else 0.0,
                total_s=round(time.perf_counter() - t0, 4),
            ),
        )

    async def ready(self) -> dict:
        stt = await self.transcriber.info.remote()
        llm = await self.summarizer.info.remote()
        return {"stt": stt, "llm": llm}
