"""The audio → transcript → summary flow over DeploymentHandles, shared by every route."""

from __future__ import annotations

import time

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from app.speech.audio import AudioError
from app.core.schemas import ModelIds, SummarizeOutput, SummarizeResult, Timings, TranscribeOutput


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps a replica's exception; give callers the original (e.g. AudioError)."""
    while isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


class Pipeline:
    def __init__(self, transcriber: DeploymentHandle, summarizer: DeploymentHandle) -> None:
        self.transcriber = transcriber
        self.summarizer = summarizer

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
        self, text: str, instruction: str | None = None, task_id: str | None = None
    ) -> SummarizeOutput:
        return await self.summarizer.summarize.remote(text, instruction, task_id=task_id)

    async def run(
        self,
        audio: bytes,
        language: str | None = None,
        instruction: str | None = None,
        on_stage=None,
        task_id: str | None = None,
    ) -> SummarizeResult:
        """Both stages; ``on_stage(name)`` is awaited before each (for task state and events)."""
        t0 = time.perf_counter()
        if on_stage is not None:
            await on_stage("transcribing")
        stt = await self.transcribe(audio, {"language": language} if language else None, task_id)
        if on_stage is not None:
            await on_stage("summarizing")
        llm = await self.summarize(stt.transcript.text, instruction, task_id)
        return SummarizeResult(
            transcript=stt.transcript,
            summary=llm.summary,
            models=ModelIds(stt=stt.model, llm=llm.model),
            timings=Timings(
                decode_s=stt.decode_s,
                transcribe_s=stt.transcribe_s,
                summarize_s=llm.summarize_s,
                total_s=round(time.perf_counter() - t0, 4),
            ),
        )

    async def ready(self) -> dict:
        stt = await self.transcriber.info.remote()
        llm = await self.summarizer.info.remote()
        return {"stt": stt, "llm": llm}
