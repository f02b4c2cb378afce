"""What the two OpenAI audio routes (transcriptions, translations) share.

The same upload checks, model check, redaction form fields and text renderings, so a
fix to one route's input handling or subtitle output cannot miss the other.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Form, UploadFile
from fastapi.responses import PlainTextResponse, Response
from pydantic import ValidationError

from app.api.auth import Principal
from app.api.deps import CallerDep, DoorDep
from app.api.errors import APIError
from app.api.limits import rate_limit
from app.api.openai.errors import OpenAIError, not_found
from app.api.openai.models import STT_ALIASES
from app.api.openai.protocol import TranscriptionSegment
from app.api.uploads import check_audio, read_upload
from app.core.settings import Settings
from app.core.task_vocabulary import ProcessingOptions
from app.speech.subtitles import to_srt, to_vtt


def rate_limited(caller: CallerDep, door: DoorDep) -> Principal:
    """The project's per-key rate limit for work-submitting routes (429 when over)."""
    rate_limit(door, caller, None)
    return caller


class RedactionForm:
    """The redaction form fields (not OpenAI's) as a dependency, for both audio routes."""

    def __init__(
        self,
        redact_pii: str | None = Form(
            None, description="Not OpenAI's: `true` redacts personal data from the text."
        ),
        redact_policy: str | None = Form(None, description="With redact_pii: entities (all)."),
        redact_mode: str | None = Form(
            None, description="With redact_pii: label, mask, pseudonym."
        ),
    ) -> None:
        self.options = parse_privacy(redact_pii, redact_policy, redact_mode)


def parse_privacy(
    redact_pii: str | None, policy: str | None, mode: str | None
) -> ProcessingOptions:
    """The redaction form fields as task options; a bad one is a 400 naming it."""
    fields = {"redact_pii": redact_pii or False, "redact_policy": policy}
    if mode:
        fields["redact_mode"] = mode
    try:
        return ProcessingOptions.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first.get("loc", ("redact_pii",))[0])
        message = f"Invalid value for '{param}': {first.get('msg')}."
        raise OpenAIError(400, message, param=param, code="invalid_value") from None


async def read_audio(
    file: UploadFile | None, model: str, served_stt: dict, settings: Settings
) -> bytes:
    """The uploaded audio, checked: present, for a served model, decodable, not too long."""
    check_file_and_model(file, model, served_stt)
    try:
        data = await read_upload(file, settings)
        # Walking the packets of a large file takes a while: keep it off the event loop.
        await asyncio.to_thread(check_audio, data, settings.sync_max_audio_minutes)
    except APIError as exc:
        raise OpenAIError(exc.status_code, exc.message, param="file", code=exc.code) from None
    return data


def check_file_and_model(file: UploadFile | None, model: str, served_stt: dict) -> None:
    """The checks that need no upload read: a file part was sent, for a served model."""
    if file is None:
        raise OpenAIError(
            400,
            "Missing required parameter: 'file'.",
            param="file",
            code="missing_required_parameter",
        )
    if model != served_stt["model"] and model not in STT_ALIASES:
        raise not_found(model)


def render_text(fmt: str, transcript: Any) -> Response | None:
    """The plain-text formats (text, srt, vtt); None for a JSON one."""
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments))
    return None


def openai_segment(seg: Any, temperature: float) -> TranscriptionSegment:
    """A transcript segment in OpenAI's verbose shape.

    app.core.schemas.Segment carries id/start/end/text (and words); Whisper's decoder
    details are passed through when the segment has them, null otherwise.
    """

    def rounded(name: str) -> float | None:
        value = getattr(seg, name, None)
        return None if value is None else round(float(value), 6)

    return TranscriptionSegment(
        id=seg.id,
        seek=int(getattr(seg, "seek", None) or round(seg.start * 100)),
        start=seg.start,
        end=seg.end,
        text=seg.text,
        tokens=list(getattr(seg, "tokens", None) or []),
        temperature=float(getattr(seg, "temperature", None) or temperature),
        avg_logprob=rounded("avg_logprob"),
        compression_ratio=rounded("compression_ratio"),
        no_speech_prob=rounded("no_speech_prob"),
    )
