"""The audio → transcript → summary flow over DeploymentHandles: the one door to the models.

Every caller (the task runner, the OpenAI routes, chat) goes through :class:`Pipeline`
with typed options; the deployments behind it only compute and return. Progress comes
back over the Transcriber's stream, and the caller's ``on_progress`` decides whom to
tell (the runner publishes task events), so no deployment publishes anything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from app.core.schemas import (
    DiarizeOutput,
    ModelIds,
    SummarizeOutput,
    SummarizeResult,
    Timings,
    TranscribeOutput,
    Transcript,
)
from app.core.task_vocabulary import ProcessingOptions, TaskStatus
from app.speech.audio import AudioError
from app.speech.diarize import DiarizeOptions, assign_speakers, display_names, speaker_text
from app.speech.engines import TranscribeProgress
from app.speech.stt import SttOptions

logger = logging.getLogger(__name__)

#: The ``models.stt`` of a task whose transcript was uploaded, not transcribed here.
UPLOADED_TRANSCRIPT = "uploaded-transcript"

#: ``await on_stage("transcribing" | "summarizing")`` before each stage.
StageCallback = Callable[[str], Awaitable[None]]
#: ``await on_progress(transcribed_s, total_s)``, at most about once a second.
ProgressCallback = Callable[[float, float], Awaitable[None]]


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps a replica's exception; give callers the original (e.g. AudioError)."""
    while isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


@contextlib.contextmanager
def _audio_errors() -> Iterator[None]:
    """A replica's AudioError reaches the caller as itself (the API maps it to 4xx)."""
    try:
        yield
    except RayTaskError as exc:
        cause = unwrap(exc)
        if isinstance(cause, AudioError):
            raise cause from None
        raise


@dataclass(frozen=True)
class SpeakerTranscript:
    """A transcript with speakers, and the two outputs it was merged from."""

    transcript: Transcript
    stt: TranscribeOutput
    diarization: DiarizeOutput


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

    @property
    def has_diarizer(self) -> bool:
        return self.diarizer is not None

    async def transcribe(
        self,
        audio: bytes,
        options: SttOptions | None = None,
        *,
        task_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> TranscribeOutput:
        """Whisper on the audio; with ``on_progress`` the Transcriber streams its ticks.

        Without it, one plain call (which the GPU path may batch with others).
        """
        opts = options or SttOptions()
        with _audio_errors():
            if on_progress is None:
                return await self.transcriber.transcribe.remote(audio, opts, task_id)
            stream = self.transcriber.options(stream=True).transcribe_stream.remote(
                audio, opts, task_id
            )
            out: TranscribeOutput | None = None
            try:
                async for item in stream:
                    if isinstance(item, TranscribeProgress):
                        await _tell(on_progress, item)
                    else:
                        out = item
            finally:
                if out is None:  # cancelled (lease lost) or failed: stop the replica's work
                    stream.cancel()
        if out is None:
            raise RuntimeError("the Transcriber's stream ended without a transcript")
        return out

    async def diarize(
        self, audio: bytes, options: DiarizeOptions | None = None, *, task_id: str | None = None
    ) -> DiarizeOutput:
        if self.diarizer is None:
            raise RuntimeError("this application has no Diarizer deployment")
        with _audio_errors():
            return await self.diarizer.diarize.remote(audio, options or DiarizeOptions(), task_id)

    async def transcribe_with_speakers(
        self,
        audio: bytes,
        stt_options: SttOptions | None = None,
        diarize_options: DiarizeOptions | None = None,
        *,
        words: bool = False,
        task_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> SpeakerTranscript:
        """Transcriber and Diarizer in parallel on the same audio, merged by word timing.

        Word timestamps are always asked for, so a segment splits at the word where the
        speaker changes; ``words`` keeps them in the result, each with its speaker.
        """
        stt_opts = dataclasses.replace(stt_options or SttOptions(), word_timestamps=True)
        stt, diar = await asyncio.gather(
            self.transcribe(audio, stt_opts, task_id=task_id, on_progress=on_progress),
            self.diarize(audio, diarize_options, task_id=task_id),
        )
        return SpeakerTranscript(assign_speakers(stt.transcript, diar, words=words), stt, diar)

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

    # --- the LLM as a chat model (the OpenAI-compatible chat route) -------------------

    async def count_tokens(self, text: str) -> int:
        return await self.summarizer.count_tokens.remote(text)

    async def chat(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        json_schema: dict | None = None,
    ) -> Any:
        """One completion (``Completion``: text, token counts, finish reason)."""
        return await self.summarizer.chat.remote(
            messages, max_tokens, temperature, json_schema=json_schema
        )

    def chat_stream(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float
    ) -> Any:
        """The completion's text pieces as they come (an async iterator with ``cancel()``)."""
        stream = self.summarizer.options(stream=True)
        return stream.chat_stream.remote(messages, max_tokens, temperature)

    async def run(
        self,
        audio: bytes,
        options: ProcessingOptions,
        *,
        on_stage: StageCallback | None = None,
        on_progress: ProgressCallback | None = None,
        task_id: str | None = None,
    ) -> SummarizeResult:
        """Transcribe (with speakers when ``options.diarize``), then summarize.

        Diarized, the summarizer reads ``Speaker N: ...`` lines and each segment its
        speaker's display name.
        """
        t0 = time.perf_counter()
        if on_stage is not None:
            await on_stage(TaskStatus.TRANSCRIBING)
        stt_opts = SttOptions(language=options.language)
        bounds = options.diarize_options()
        diar: DiarizeOutput | None = None
        if bounds is not None:
            merged = await self.transcribe_with_speakers(
                audio,
                stt_opts,
                DiarizeOptions(**bounds),
                words=options.word_speakers,
                task_id=task_id,
                on_progress=on_progress,
            )
            stt, diar, transcript = merged.stt, merged.diarization, merged.transcript
        else:
            stt = await self.transcribe(audio, stt_opts, task_id=task_id, on_progress=on_progress)
            transcript = stt.transcript
        return await self.summarize_transcript(
            transcript, options, on_stage=on_stage, task_id=task_id, stt=stt, diar=diar, t0=t0
        )

    async def summarize_transcript(
        self,
        transcript: Transcript,
        options: ProcessingOptions,
        *,
        on_stage: StageCallback | None = None,
        task_id: str | None = None,
        stt: TranscribeOutput | None = None,
        diar: DiarizeOutput | None = None,
        t0: float | None = None,
    ) -> SummarizeResult:
        """Summarize a transcript: one made here (``stt``, ``diar`` from :meth:`run`), or one
        someone already had (an upload: no speech to text)."""
        t0 = time.perf_counter() if t0 is None else t0
        if on_stage is not None:
            await on_stage(TaskStatus.SUMMARIZING)
        llm = await self._summarize_transcript(transcript, options, task_id)
        return SummarizeResult(
            transcript=transcript,
            summary=llm.summary,
            models=ModelIds(
                stt=stt.model if stt else UPLOADED_TRANSCRIPT,
                llm=llm.model,
                diarizer=diar.model if diar else None,
            ),
            timings=Timings(
                decode_s=stt.decode_s if stt else 0.0,
                transcribe_s=stt.transcribe_s if stt else 0.0,
                summarize_s=llm.summarize_s,
                diarize_s=diar.diarize_s if diar else 0.0,
                total_s=round(time.perf_counter() - t0, 4),
            ),
        )

    async def _summarize_transcript(
        self, transcript: Transcript, options: ProcessingOptions, task_id: str | None
    ) -> SummarizeOutput:
        """With speakers, the summarizer reads ``Speaker N: ...`` lines and each segment
        carries its speaker's display name."""
        names = display_names(transcript) if transcript.speakers else {}
        segments = [
            {"id": s.id, "start": s.start, "end": s.end, "text": s.text}
            | ({"speaker": names.get(s.speaker, s.speaker)} if s.speaker else {})
            for s in transcript.segments
        ]
        text = speaker_text(transcript)
        return await self.summarize(
            text, options.instruction, task_id, segments, transcript.duration_s
        )

    async def ready(self) -> dict:
        """Every model deployment's info: ``{"stt", "llm", "diarizer"}`` (the cache key).

        ``"diarizer"`` is ``None`` in an app without a Diarizer; with one, this waits
        for it too, as a diarized task would.
        """
        calls = [self.transcriber.info.remote(), self.summarizer.info.remote()]
        if self.diarizer is not None:
            calls.append(self.diarizer.info.remote())
        stt, llm, *diar = await asyncio.gather(*calls)
        return {"stt": stt, "llm": llm, "diarizer": diar[0] if diar else None}


async def _tell(on_progress: ProgressCallback, tick: TranscribeProgress) -> None:
    """Progress is best effort: a failing listener (Redis down) must not fail the work."""
    try:
        await on_progress(tick.transcribed_s, tick.total_s)
    except Exception as exc:
        logger.warning("progress callback failed: %s: %s", type(exc).__name__, exc)
