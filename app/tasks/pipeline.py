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
    Redaction,
    SummarizeOutput,
    SummarizeResult,
    Summary,
    Timings,
    TranscribeOutput,
    Transcript,
)
from app.core.task_vocabulary import ProcessingOptions, TaskStatus
from app.llm.summary_language import (
    translated,
    translation_messages,
    translation_schema,
    with_instruction,
)
from app.privacy.redact import redact_summary, redact_transcript, redactor_for, report
from app.speech.audio import AudioError
from app.speech.diarize import DiarizeOptions, assign_speakers, display_names, speaker_text
from app.speech.engines import TranscribeProgress
from app.speech.stt import SttOptions
from app.tasks.serve_state import app_state

logger = logging.getLogger(__name__)

#: The ``models.stt`` of a task whose transcript was uploaded, not transcribed here.
UPLOADED_TRANSCRIPT = "uploaded-transcript"
#: The ``models.llm`` of a task that asked for no summary (``summarize=false``).
NO_MODEL = "none"
SKIPPED = Summary(summary="", key_points=[], action_items=[], method="skipped")

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
        # The model deployments' last answer to ``info`` and the app deployment it
        # belongs to (see :meth:`ready`).
        self._known: dict | None = None
        self._known_deployed_at: float | None = None

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
        # Redacting the audio needs each redacted word's time.
        stt_opts = SttOptions(
            language=options.language,
            languages=options.languages,
            word_timestamps=options.redact_audio,
        )
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
        translation = await self.translation(audio, transcript, options, task_id=task_id)
        return await self.summarize_transcript(
            transcript,
            options,
            on_stage=on_stage,
            task_id=task_id,
            stt=stt,
            diar=diar,
            t0=t0,
            translation=translation,
        )

    async def translation(
        self,
        audio: bytes,
        transcript: Transcript,
        options: ProcessingOptions,
        *,
        task_id: str | None = None,
    ) -> Transcript | None:
        """``translate_to=en``: the speech in English (Whisper's translate task on the
        multilingual model); English speech is its own translation (no second pass)."""
        if options.translate_to != "en":
            return None
        spoken = transcript.detection.languages if transcript.detection else [transcript.language]
        if spoken == ["en"]:
            return transcript.model_copy(
                update={"speakers": None, "turns": None, "speaker_count": None}
            )
        opts = SttOptions(language=options.language, languages=options.languages, task="translate")
        out = await self.transcribe(audio, opts, task_id=task_id)
        return out.transcript

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
        translation: Transcript | None = None,
    ) -> SummarizeResult:
        """Summarize a transcript: one made here (``stt``, ``diar`` from :meth:`run`), or one
        someone already had (an upload: no speech to text)."""
        t0 = time.perf_counter() if t0 is None else t0
        if on_stage is not None and options.summarize:
            await on_stage(TaskStatus.SUMMARIZING)
        # Redaction first: the LLM, the result, and so the cache, the search index,
        # events and webhooks only ever see the redacted transcript.
        redactor = await asyncio.to_thread(redactor_for, options)  # spaCy loads once: ~1.5 s
        redact_s, audio_spans = 0.0, []
        if redactor is not None:
            t_redact = time.perf_counter()
            transcript, audio_spans = await asyncio.to_thread(
                redact_transcript, transcript, redactor
            )
            if translation is not None:
                translation, _ = await asyncio.to_thread(redact_transcript, translation, redactor)
            redact_s = time.perf_counter() - t_redact
        llm = await self._summarize_transcript(transcript, options, task_id)
        summary, redaction = llm.summary, None
        if redactor is not None:
            t_redact = time.perf_counter()
            summary = await asyncio.to_thread(redact_summary, summary, redactor)
            redaction = report(redactor, audio_spans)
            redact_s += time.perf_counter() - t_redact
        return SummarizeResult(
            transcript=transcript,
            translation=translation,
            summary=summary,
            redaction=redaction,
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
                redact_s=round(redact_s, 4),
                total_s=round(time.perf_counter() - t0, 4),
            ),
        )

    async def _summarize_transcript(
        self, transcript: Transcript, options: ProcessingOptions, task_id: str | None
    ) -> SummarizeOutput:
        """With speakers, the summarizer reads ``Speaker N: ...`` lines and each segment
        carries its speaker's display name."""
        if not options.summarize:
            # A copy: callers set fields on a result's summary (language, redaction).
            return SummarizeOutput(
                summary=SKIPPED.model_copy(deep=True), summarize_s=0.0, model=NO_MODEL
            )
        names = display_names(transcript) if transcript.speakers else {}
        segments = [
            {"id": s.id, "start": s.start, "end": s.end, "text": s.text}
            | ({"speaker": names.get(s.speaker, s.speaker)} if s.speaker else {})
            for s in transcript.segments
        ]
        text = speaker_text(transcript)
        spoken = transcript.language
        instruction = with_instruction(spoken, options.instruction)
        out = await self.summarize(text, instruction, task_id, segments, transcript.duration_s)
        if spoken != "en":
            out.summary.language = spoken
        target = options.summary_language or spoken
        if target != spoken and out.summary.method != "none":
            out.summary = await self._translated_summary(out.summary, target)
        return out

    async def _translated_summary(self, summary: Summary, target: str) -> Summary:
        """The checked summary translated into ``target``; as it was (its ``language``
        saying so) when the LLM's translation is not usable."""
        completion = await self.chat(
            translation_messages(summary, target),
            max_tokens=1024,
            temperature=0.0,
            json_schema=translation_schema(summary),
        )
        done = translated(summary, completion.text, target)
        if done is None:
            logger.warning("summary translation to %s unusable; kept %s", target, summary.language)
            return summary
        return done

    async def redact(
        self, transcript: Transcript, options: ProcessingOptions
    ) -> tuple[Transcript, Redaction | None]:
        """The transcript redacted per ``options`` (as is without ``redact_pii``): for the
        routes that return a transcript without a summary (OpenAI's)."""
        redactor = await asyncio.to_thread(redactor_for, options)
        if redactor is None:
            return transcript, None
        redacted, spans = await asyncio.to_thread(redact_transcript, transcript, redactor)
        return redacted, report(redactor, spans)

    async def ready(self) -> dict:
        """Every model deployment's info: ``{"stt", "llm", "diarizer"}`` (the cache key).

        ``"diarizer"`` is ``None`` in an app without a Diarizer; with one, this waits
        for it too, as a diarized task would. The deployments are asked only when their
        answer can have changed: the first time, and after the app was deployed again
        (a new model, prompt or setting). In between, Serve's controller says whether
        each is still serving, so a readiness probe never wakes a model deployment that
        scaled to zero when idle, nor keeps one from getting there.
        """
        roles = {"stt": self.transcriber, "llm": self.summarizer, "diarizer": self.diarizer}
        app_name = getattr(self.transcriber, "app_name", None)
        state = await asyncio.to_thread(app_state, app_name) if app_name else None
        if state is not None:
            names = {getattr(h, "deployment_name", "") for h in roles.values() if h is not None}
            sick = {n: why for n, why in state.not_serving.items() if n in names}
            if sick:
                raise RuntimeError(f"model deployments not serving: {sick}")
            if self._known is not None and state.deployed_at == self._known_deployed_at:
                return self._known
        calls = [self.transcriber.info.remote(), self.summarizer.info.remote()]
        if self.diarizer is not None:
            calls.append(self.diarizer.info.remote())
        stt, llm, *diar = await asyncio.gather(*calls)
        info = {"stt": stt, "llm": llm, "diarizer": diar[0] if diar else None}
        self._known, self._known_deployed_at = info, state.deployed_at if state else None
        return info


async def _tell(on_progress: ProgressCallback, tick: TranscribeProgress) -> None:
    """Progress is best effort: a failing listener (Redis down) must not fail the work."""
    try:
        await on_progress(tick.transcribed_s, tick.total_s)
    except Exception as exc:
        logger.warning("progress callback failed: %s: %s", type(exc).__name__, exc)
