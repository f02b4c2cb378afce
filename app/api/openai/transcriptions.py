"""``POST /v1/audio/transcriptions``: the router and its serving code."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from app.api.deps import DoorDep, PipelineDep
from app.api.openai.audio_routes import (
    RedactionForm,
    openai_segment,
    rate_limited,
    read_audio,
    render_text,
)
from app.api.openai.errors import OpenAIError, OpenAIRoute, from_validation
from app.api.openai.languages import language_name
from app.api.openai.models import ServedModels
from app.api.openai.protocol import (
    Transcription,
    TranscriptionRequest,
    TranscriptionUsage,
    TranscriptionVerbose,
    TranscriptionWord,
)
from app.api.openai.transcription_stream import stream_transcription
from app.core.logs import get_logger
from app.core.task_vocabulary import ProcessingOptions
from app.speech.diarize import to_diarized_json
from app.speech.stt import SttOptions
from app.tasks.pipeline import Pipeline

log = get_logger()

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])


def parse_request(fields: dict[str, Any]) -> TranscriptionRequest:
    """Form fields -> :class:`TranscriptionRequest`; a bad one is a 400 naming it."""
    try:
        return TranscriptionRequest.model_validate(
            {k: v for k, v in fields.items() if v is not None and v != []}
        )
    except ValidationError as exc:
        errors = list(exc.errors())
        for err in errors:  # name the field, not the list index, as OpenAI does
            err["loc"] = tuple(p for p in err.get("loc", ()) if not isinstance(p, int))
        raise from_validation(errors) from None


def render(req: TranscriptionRequest, transcript: Any) -> Response:
    """The transcript in the requested ``response_format``."""
    fmt = req.response_format
    if (text := render_text(fmt, transcript)) is not None:
        return text
    if fmt == "diarized_json":  # without speakers (the diarizing path is _diarized)
        return JSONResponse(to_diarized_json(transcript, math.ceil(transcript.duration_s)))
    usage = TranscriptionUsage(seconds=math.ceil(transcript.duration_s))
    if fmt == "json":
        return JSONResponse(Transcription(text=transcript.text, usage=usage).model_dump())
    grans = req.timestamp_granularities
    body = TranscriptionVerbose(
        language=language_name(transcript.language),
        language_probability=transcript.language_probability,
        duration=transcript.duration_s,
        text=transcript.text,
        usage=usage,
    )
    if not grans or "segment" in grans:
        body.segments = [openai_segment(s, req.temperature or 0.0) for s in transcript.segments]
    if req.want_words:
        body.words = [
            TranscriptionWord(word=w.word.strip(), start=w.start, end=w.end)
            for s in transcript.segments
            for w in (s.words or [])
        ]
    return JSONResponse(_verbose_dict(body))


def _verbose_dict(body: TranscriptionVerbose) -> dict[str, Any]:
    """Leave out ``segments``/``words`` that were not asked for; keep nulls inside them."""
    data = body.model_dump()
    for key in ("segments", "words"):
        if data[key] is None:
            del data[key]
    return data


@router.post(
    "/v1/audio/transcriptions",
    dependencies=[Depends(rate_limited)],
    summary="Transcribe audio (OpenAI-compatible)",
    openapi_extra={"x-aipp-endpoint": "transcriptions"},
    responses={
        200: {
            "description": "json / verbose_json: a JSON object; text / srt / vtt: text/plain.",
            "content": {"text/plain": {}},
        },
        400: {"description": "Invalid parameter"},
        404: {"description": "Unknown model"},
        413: {"description": "Upload or audio too large/long"},
        422: {"description": "The file is not audio that can be decoded"},
    },
)
async def create_transcription(
    models: ServedModels,
    door: DoorDep,
    pipeline: PipelineDep,
    file: UploadFile | None = File(None, description="Audio in any format FFmpeg reads."),
    model: str | None = Form(None, description="`whisper-1` or the served Whisper model."),
    language: str | None = Form(None, description="ISO-639-1 code (or English name)."),
    prompt: str | None = Form(None, description="Text to guide the style or vocabulary."),
    response_format: str = Form(
        "json", description="json, text, srt, verbose_json, vtt or diarized_json."
    ),
    temperature: str | None = Form(None, description="0 to 1; 0 keeps Whisper's fallback."),
    timestamp_granularities: list[str] | None = Form(
        None, alias="timestamp_granularities[]", description="segment and/or word."
    ),
    timestamp_granularities_plain: list[str] | None = Form(
        None, alias="timestamp_granularities", include_in_schema=False
    ),
    stream: str | None = Form(
        None,
        description="true: `transcript.text.delta` / `transcript.text.done` server-sent "
        "events (json or text format).",
    ),
    redaction: RedactionForm = Depends(),
) -> Response:
    privacy = redaction.options
    req = parse_request(
        {
            "model": model,
            "language": language,
            "prompt": prompt,
            "response_format": response_format,
            "temperature": temperature,
            "timestamp_granularities": list(timestamp_granularities or [])
            + list(timestamp_granularities_plain or []),
            "stream": stream,
        }
    )
    data = await read_audio(file, req.model, models["stt"], door.settings)
    if req.response_format == "diarized_json":
        return await _diarized(pipeline, data, req, privacy)
    if req.stream:
        if privacy.redact_pii:
            raise OpenAIError(
                400,
                "stream=true cannot be combined with redact_pii (redaction needs the "
                "whole transcript).",
                param="stream",
                code="unsupported_value",
            )
        return await stream_transcription(pipeline, data, SttOptions(**req.stt_options()))
    out = await pipeline.transcribe(data, SttOptions(**req.stt_options()))
    transcript, _ = await pipeline.redact(out.transcript, privacy)
    log.info(
        "openai transcription: %.1fs of audio, model=%s, format=%s, words=%s",
        out.transcript.duration_s,
        out.model,
        req.response_format,
        req.want_words,
    )
    return render(req, transcript)


async def _diarized(
    pipeline: Pipeline, data: bytes, req: TranscriptionRequest, privacy: ProcessingOptions
) -> Response:
    """The pipeline's diarized path (the one tasks take), rendered as OpenAI's shape."""
    if not pipeline.has_diarizer:
        raise OpenAIError(
            400,
            "response_format 'diarized_json' needs the Diarizer deployment, "
            "which this server does not run.",
            param="response_format",
            code="unsupported_value",
        )
    merged = await pipeline.transcribe_with_speakers(data, SttOptions(**req.stt_options()))
    diar = merged.diarization
    transcript, _ = await pipeline.redact(merged.transcript, privacy)
    log.info(
        "openai diarized transcription: %.1fs of audio, %d speakers (%s)",
        transcript.duration_s,
        len(diar.speakers),
        diar.method,
    )
    return JSONResponse(to_diarized_json(transcript, math.ceil(transcript.duration_s)))
