"""``POST /v1/audio/translations``: speech in any language to English text (OpenAI-compatible).

Whisper's ``translate`` task on the multilingual model (the Transcriber's language
router sends every translation there); the shapes are OpenAI's: ``json`` is
``{"text"}``, ``verbose_json`` adds ``language`` ("english"), ``duration`` and
``segments``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from app.api.deps import DoorDep, PipelineDep
from app.api.openai.audio_routes import (
    RedactionForm,
    check_file_and_model,
    openai_segment,
    rate_limited,
    read_audio,
    render_text,
)
from app.api.openai.errors import OpenAIError, OpenAIRoute, from_validation
from app.api.openai.languages import language_name
from app.api.openai.models import ServedModels
from app.api.openai.protocol import TranslationRequest, TranslationVerbose
from app.core.logs import get_logger
from app.speech.stt import SttOptions

log = get_logger()

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])


def parse_request(fields: dict[str, Any]) -> TranslationRequest:
    try:
        return TranslationRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise from_validation(list(exc.errors())) from None


def render(req: TranslationRequest, transcript: Any) -> Response:
    fmt = req.response_format
    if (text := render_text(fmt, transcript)) is not None:
        return text
    if fmt == "json":
        return JSONResponse({"text": transcript.text})
    detection = transcript.detection
    spoken = detection.languages[0] if detection and detection.languages else None
    body = TranslationVerbose(
        duration=transcript.duration_s,
        text=transcript.text,
        segments=[openai_segment(s, req.temperature or 0.0) for s in transcript.segments],
        spoken_language=language_name(spoken) if spoken else None,
    )
    return JSONResponse(body.model_dump())


@router.post(
    "/v1/audio/translations",
    dependencies=[Depends(rate_limited)],
    summary="Translate speech to English (OpenAI-compatible)",
    openapi_extra={"x-aipp-endpoint": "translations"},
    responses={
        200: {
            "description": "json / verbose_json: a JSON object; text / srt / vtt: text/plain.",
            "content": {"text/plain": {}},
        },
        400: {"description": "Invalid parameter, or no multilingual model is served"},
        404: {"description": "Unknown model"},
        413: {"description": "Upload or audio too large/long"},
        422: {"description": "The file is not audio that can be decoded"},
    },
)
async def create_translation(
    models: ServedModels,
    door: DoorDep,
    pipeline: PipelineDep,
    file: UploadFile | None = File(None, description="Audio in any format FFmpeg reads."),
    model: str | None = Form(None, description="`whisper-1` or the served Whisper model."),
    prompt: str | None = Form(None, description="English text to guide the style."),
    response_format: str = Form("json", description="json, text, srt, verbose_json or vtt."),
    temperature: str | None = Form(None, description="0 to 1; 0 keeps Whisper's fallback."),
    redaction: RedactionForm = Depends(),
) -> Response:
    req = parse_request(
        {
            "model": model,
            "prompt": prompt,
            "response_format": response_format,
            "temperature": temperature,
        }
    )
    stt = models["stt"]
    # Refused before the upload is read: an English-only service never needs the bytes.
    check_file_and_model(file, req.model, stt)
    if not stt.get("multilingual"):
        raise OpenAIError(
            400,
            f"the served Whisper model '{stt['model']}' is English-only and no multilingual "
            "model is configured (AIPP_STT_MULTILINGUAL_MODEL), so it cannot translate.",
            param="model",
            code="unsupported_value",
        )
    data = await read_audio(file, req.model, stt, door.settings)
    out = await pipeline.transcribe(data, SttOptions(**req.stt_options()))
    # The English text is what leaves, so it is what is redacted (names, numbers).
    transcript, _ = await pipeline.redact(out.transcript, redaction.options)
    log.info(
        "openai translation: %.1fs of audio, model=%s, format=%s",
        out.transcript.duration_s,
        out.model,
        req.response_format,
    )
    return render(req, transcript)
