"""OpenAI-compatible endpoints: audio transcriptions, chat completions, models.

Point an OpenAI SDK at ``<service>/v1`` and it works unchanged::

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="aipp_...")  # any when auth is off
    client.audio.transcriptions.create(model="whisper-1", file=open("a.flac", "rb"))
    client.chat.completions.create(model="qwen2.5-0.5b-instruct-q4_k_m", messages=[...])

Errors on these routes (and only these) use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so SDKs raise their usual
exceptions: invalid parameters (pydantic validation included) are 400
(``BadRequestError``), an unknown model 404 (``NotFoundError``), audio that cannot
be processed keeps the project's 413/422 (``UnprocessableEntityError`` for 422),
and 401/429 from auth and rate limiting keep their codes. :class:`OpenAIRoute`
does the conversion around the whole route handler, dependencies included, so a
router- or app-level dependency (e.g. API-key auth) raising ``APIError`` or
``HTTPException`` is converted too.

Auth and limits are the project's: the caller's API key (``app.api.deps.principal``)
on every route, and the per-key rate limit on the two POST routes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core import metrics
from app.api.deps import principal, services_of
from app.tasks.submit import rate_limit
from app.api.uploads import check_audio, read_upload
from app.speech.audio import AudioError
from app.api.auth import Principal
from app.api.errors import APIError
from app.core.logs import get_logger
from app.tasks.pipeline import unwrap
from app.speech.subtitles import to_srt, to_vtt

log = get_logger()

# Paths whose errors are OpenAI-shaped (for a middleware that wants to match them).
OPENAI_PATH_PREFIXES = ("/v1/audio/", "/v1/chat/", "/v1/models")

STT_ALIASES = ("whisper-1", "whisper")
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")
MODELS_CACHE_S = 30.0
CREATED = int(time.time())

# Whisper's languages: ISO-639-1 (or -3) code -> the lower-case English name OpenAI returns.
LANGUAGE_NAMES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}
_LANGUAGE_CODES = {name: code for code, name in LANGUAGE_NAMES.items()}


def language_name(code: str | None) -> str:
    if not code:
        return "unknown"
    return LANGUAGE_NAMES.get(code.lower(), code.lower())


# --- Errors ----------------------------------------------------------------------------


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,  # noqa: A002 - OpenAI's field name
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type or error_type(status_code)
        self.headers = headers or {}


def error_type(status_code: int) -> str:
    if status_code == 429:
        return "requests"
    if status_code == 403:
        return "permission_error"
    if status_code >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error_body(
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,  # noqa: A002
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _validation_error(exc: RequestValidationError) -> OpenAIError:
    errors = exc.errors()
    if not errors:
        return OpenAIError(400, "Invalid request.", code="invalid_request")
    first = errors[0]
    parts = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
    param = ".".join(parts) or None
    if first.get("type") == "missing":
        return OpenAIError(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if first.get("type") == "json_invalid":
        return OpenAIError(400, "The request body is not valid JSON.", code="invalid_json")
    messages = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "form"))
        messages.append(f"Invalid value for '{loc}': {err.get('msg', 'invalid')}.")
    return OpenAIError(400, " ".join(messages), param=param, code="invalid_value")


def to_openai_error(exc: BaseException) -> OpenAIError | None:
    """The OpenAI-shaped equivalent of an exception a route can raise; None if unknown."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, APIError):
        param = exc.extra.get("param") or exc.extra.get("field")
        return OpenAIError(
            exc.status_code, exc.message, param=param, code=exc.code, headers=exc.headers
        )
    if isinstance(exc, AudioError):
        return OpenAIError(exc.status_code, exc.message, param="file", code=exc.code)
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return OpenAIError(
            exc.status_code, str(exc.detail), code=code, headers=getattr(exc, "headers", None)
        )
    try:
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
    except ImportError:  # pragma: no cover
        return None
    cause = unwrap(exc)
    if isinstance(cause, AudioError):
        return to_openai_error(cause)
    if isinstance(cause, BackPressureError):
        return OpenAIError(
            503,
            "The service is overloaded; retry shortly.",
            code="overloaded",
            headers={"Retry-After": "10"},
        )
    if isinstance(cause, DeploymentUnavailableError):
        return OpenAIError(
            503,
            "The model is not available right now.",
            code="model_unavailable",
            headers={"Retry-After": "10"},
        )
    return None


def openai_error_response(exc: BaseException) -> JSONResponse:
    """A JSONResponse in OpenAI's error shape for any exception (unknown ones are 500)."""
    err = to_openai_error(exc)
    if err is None:
        log.exception("unhandled error on an OpenAI-compatible route", exc_info=exc)
        err = OpenAIError(
            500, f"Internal server error: {type(exc).__name__}.", code="internal_error"
        )
    return JSONResponse(
        openai_error_body(err.message, err.type, err.param, err.code),
        status_code=err.status_code,
        headers=err.headers or None,
    )


_ENDPOINTS = {
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/chat/completions": "chat",
}


class OpenAIRoute(APIRoute):
    """Answers every error raised while handling the route in OpenAI's shape.

    Wraps FastAPI's whole request handler: body parsing, validation, dependencies
    and the endpoint. Also counts requests by endpoint and status.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        endpoint = _ENDPOINTS.get(self.path, "models")

        async def openai_route_handler(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:
                response = openai_error_response(exc)
            metrics.record_openai_request(endpoint, response.status_code, time.perf_counter() - t0)
            return response

        return openai_route_handler


def rate_limited(request: Request, caller: Principal = Depends(principal)) -> Principal:
    """The project's per-key rate limit for work-submitting routes (429 when over)."""
    rate_limit(services_of(request), caller, None)
    return caller


# Every route needs the caller's API key when auth is on (app.api.auth; 401 otherwise);
# the POST routes, which run the models, also count against the key's rate limit.
router = APIRouter(route_class=OpenAIRoute, tags=["openai"], dependencies=[Depends(principal)])


# --- Models ------------------------------------------------------------------------------


async def served_models(request: Request) -> dict[str, dict]:
    """``{"stt": Transcriber.info(), "llm": Summarizer.info()}``, cached for 30 s."""
    state = request.app.state
    cached = getattr(state, "openai_models", None)
    now = time.monotonic()
    if cached and now - cached[0] < MODELS_CACHE_S:
        return cached[1]
    pipeline = request.app.state.pipeline
    try:
        stt, llm = await asyncio.wait_for(
            asyncio.gather(pipeline.transcriber.info.remote(), pipeline.summarizer.info.remote()),
            timeout=30,
        )
    except Exception as exc:
        raise OpenAIError(
            503,
            f"The models are not ready: {type(exc).__name__}.",
            code="models_not_ready",
            headers={"Retry-After": "5"},
        ) from None
    models = {"stt": stt, "llm": llm}
    state.openai_models = (now, models)
    return models


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "aipp"}


def _not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


@router.get("/v1/models", summary="List the served models (OpenAI-compatible)")
async def list_models(request: Request) -> dict:
    models = await served_models(request)
    return {
        "object": "list",
        "data": [_model_card(models["stt"]["model"]), _model_card(models["llm"]["model"])],
    }


@router.get("/v1/models/{model_id:path}", summary="One served model (OpenAI-compatible)")
async def retrieve_model(request: Request, model_id: str) -> dict:
    models = await served_models(request)
    known = {models["stt"]["model"], models["llm"]["model"], *STT_ALIASES}
    if model_id not in known:
        raise _not_found(model_id)
    return _model_card(model_id)


# --- Audio transcriptions --------------------------------------------------------------


def _language_code(language: str | None) -> str | None:
    if language is None or not language.strip():
        return None
    value = language.strip().lower()
    if value in LANGUAGE_NAMES:
        return value
    if value in _LANGUAGE_CODES:
        return _LANGUAGE_CODES[value]
    raise OpenAIError(
        400,
        f"Invalid language '{language}'. Language parameter must be specified in ISO-639-1 format.",
        param="language",
        code="invalid_language_format",
    )


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def _verbose_segment(seg: Any, temperature: float) -> dict[str, Any]:
    # app.core.schemas.Segment carries id/start/end/text (and words); Whisper's decoder
    # details are passed through when the segment has them, null otherwise.
    return {
        "id": seg.id,
        "seek": int(getattr(seg, "seek", None) or round(seg.start * 100)),
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "tokens": list(getattr(seg, "tokens", None) or []),
        "temperature": float(getattr(seg, "temperature", None) or temperature),
        "avg_logprob": _round(getattr(seg, "avg_logprob", None), 6),
        "compression_ratio": _round(getattr(seg, "compression_ratio", None), 6),
        "no_speech_prob": _round(getattr(seg, "no_speech_prob", None), 6),
    }


@router.post(
    "/v1/audio/transcriptions",
    dependencies=[Depends(rate_limited)],
    summary="Transcribe audio (OpenAI-compatible)",
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
    request: Request,
    file: UploadFile | None = File(None, description="Audio in any format FFmpeg reads."),
    model: str | None = Form(None, description="The STT model id, or `whisper-1`."),
    language: str | None = Form(None, description="ISO-639-1 code; detected when omitted."),
    prompt: str | None = Form(None, description="Text to guide style or vocabulary."),
    response_format: str = Form("json", description="json, text, srt, verbose_json or vtt."),
    temperature: float | None = Form(None, description="0 to 1; 0 lets Whisper fall back."),
    timestamp_granularities: list[str] | None = Form(
        None, alias="timestamp_granularities[]", description="segment and/or word."
    ),
    timestamp_granularities_plain: list[str] | None = Form(
        None, alias="timestamp_granularities", include_in_schema=False
    ),
    stream: bool | None = Form(None, description="Not supported: must be false."),
) -> Response:
    if not model:
        raise OpenAIError(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    if file is None:
        raise OpenAIError(
            400,
            "Missing required parameter: 'file'.",
            param="file",
            code="missing_required_parameter",
        )
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(
            400,
            f"Invalid value for 'response_format': '{response_format}'. Supported: "
            f"{', '.join(RESPONSE_FORMATS)}.",
            param="response_format",
            code="invalid_value",
        )
    granularities = list(timestamp_granularities or []) + list(timestamp_granularities_plain or [])
    for g in granularities:
        if g not in GRANULARITIES:
            raise OpenAIError(
                400,
                f"Invalid value for 'timestamp_granularities[]': '{g}'. Supported: segment, word.",
                param="timestamp_granularities",
                code="invalid_value",
            )
    want_words = "word" in granularities
    if want_words and response_format != "verbose_json":
        raise OpenAIError(
            400,
            "timestamp_granularities[]=word requires response_format=verbose_json.",
            param="timestamp_granularities",
            code="invalid_value",
        )
    if temperature is not None and not (0.0 <= temperature <= 1.0):
        raise OpenAIError(
            400,
            "Invalid value for 'temperature': must be between 0 and 1.",
            param="temperature",
            code="invalid_value",
        )
    if stream:
        raise OpenAIError(
            400,
            "Streaming transcriptions are not supported; omit 'stream'.",
            param="stream",
            code="unsupported_value",
        )
    language_code = _language_code(language)

    models = await served_models(request)
    stt_name = models["stt"]["model"]
    if model != stt_name and model not in STT_ALIASES:
        raise _not_found(model)

    settings = request.app.state.settings
    try:
        data = await read_upload(file, settings)
        check_audio(data, settings.sync_max_audio_minutes)
    except APIError as exc:
        raise OpenAIError(exc.status_code, exc.message, param="file", code=exc.code) from None

    # Temperature 0 (or none) keeps Whisper's fallback schedule, as OpenAI documents.
    options: dict[str, Any] = {"word_timestamps": want_words}
    if language_code:
        options["language"] = language_code
    if prompt:
        options["initial_prompt"] = prompt
    if temperature:
        options["temperature"] = temperature
    try:
        out = await request.app.state.pipeline.transcribe(data, options)
    except AudioError as exc:
        raise OpenAIError(exc.status_code, exc.message, param="file", code=exc.code) from None
    transcript = out.transcript
    log.info(
        "openai transcription: %.1fs of audio, model=%s, format=%s, words=%s",
        transcript.duration_s,
        out.model,
        response_format,
        want_words,
    )

    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments))
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration_s)}
    if response_format == "json":
        return JSONResponse({"text": transcript.text, "usage": usage})
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(transcript.language),
        "duration": transcript.duration_s,
        "text": transcript.text,
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [_verbose_segment(s, temperature or 0.0) for s in transcript.segments]
    if want_words:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end}
            for s in transcript.segments
            for w in (s.words or [])
        ]
    body["usage"] = usage
    return JSONResponse(body)


# --- Chat completions --------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request this engine honours.

    Unknown fields are accepted and ignored (as OpenAI-compatible servers do);
    ``n`` other than 1 and ``tools`` are refused rather than silently dropped.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None


def _message_text(msg: ChatMessage, index: int) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    texts = []
    for part in msg.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise OpenAIError(
                400,
                "Only text content parts are supported.",
                param=f"messages.{index}.content",
                code="invalid_value",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _engine_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    out = []
    for i, msg in enumerate(messages):
        role = "system" if msg.role == "developer" else msg.role
        out.append({"role": role, "content": _message_text(msg, i)})
    return out


def _json_schema(fmt: ResponseFormat | None) -> dict | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None or not fmt.json_schema.schema_:
        raise OpenAIError(
            400,
            "response_format json_schema needs 'json_schema.schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )
    return fmt.json_schema.schema_


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def _chunk(
    cid: str, created: int, model: str, delta: dict, finish: str | None, with_usage: bool
) -> dict[str, Any]:
    chunk = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@router.post(
    "/v1/chat/completions",
    dependencies=[Depends(rate_limited)],
    summary="Chat completion (OpenAI-compatible)",
)
async def create_chat_completion(request: Request, body: ChatCompletionRequest) -> Response:
    if not body.messages:
        raise OpenAIError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    if body.n not in (None, 1):
        raise OpenAIError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    if body.tools:
        raise OpenAIError(
            400,
            "Tools are not supported by this model server.",
            param="tools",
            code="unsupported_parameter",
        )
    requested = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    for name, value in (
        ("max_tokens", body.max_tokens),
        ("max_completion_tokens", body.max_completion_tokens),
    ):
        if value is not None and value < 1:
            raise OpenAIError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected "
                f"a value >= 1, but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
    messages = _engine_messages(body.messages)
    schema = _json_schema(body.response_format)

    models = await served_models(request)
    llm = models["llm"]
    if body.model != llm["model"]:
        raise _not_found(body.model)
    context = int(llm.get("context_tokens") or 0)
    if context and requested is not None and requested > context:
        raise OpenAIError(
            400,
            f"'{param}' is too large: {requested}. This model's maximum context length "
            f"is {context} tokens.",
            param=param,
            code="invalid_value",
        )
    summarizer = request.app.state.pipeline.summarizer
    # The chat template adds a few tokens per message on top of the text itself.
    text = "\n".join(m["content"] for m in messages)
    prompt_tokens = await summarizer.count_tokens.remote(text) + 4 * len(messages) + 3
    if context and prompt_tokens >= context:
        raise OpenAIError(
            400,
            f"This model's maximum context length is {context} tokens. However, your "
            f"messages resulted in about {prompt_tokens} tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    room = context - prompt_tokens if context else (requested or 512)
    max_tokens = max(1, min(requested or room, room))
    temperature = 1.0 if body.temperature is None else body.temperature

    cid, created, model = _completion_id(), int(time.time()), llm["model"]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if not body.stream:
        comp = await summarizer.chat.remote(messages, max_tokens, temperature, json_schema=schema)
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": comp.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "length" if comp.finish_reason == "length" else "stop",
                    }
                ],
                "usage": _usage(comp.prompt_tokens, comp.completion_tokens),
            }
        )

    if schema is not None:
        # Constrained decoding has no token stream here: one content chunk, then the end.
        comp = await summarizer.chat.remote(messages, max_tokens, temperature, json_schema=schema)
        first, rest = comp.text, None
        usage_now = _usage(comp.prompt_tokens, comp.completion_tokens)
        finish = "length" if comp.finish_reason == "length" else "stop"
    else:
        rest = summarizer.options(stream=True).chat_stream.remote(messages, max_tokens, temperature)
        # Take the first piece before answering 200, so a failure is still a clean error.
        try:
            first = await rest.__anext__()
        except StopAsyncIteration:
            first = ""
            rest = None
        usage_now, finish = None, None

    async def events() -> AsyncIterator[str]:
        parts = [first] if first else []
        yield _sse(
            _chunk(cid, created, model, {"role": "assistant", "content": ""}, None, include_usage)
        )
        if first:
            yield _sse(_chunk(cid, created, model, {"content": first}, None, include_usage))
        usage, reason = usage_now, finish
        try:
            if rest is not None:
                try:
                    async for delta in rest:
                        parts.append(delta)
                        yield _sse(
                            _chunk(cid, created, model, {"content": delta}, None, include_usage)
                        )
                except (asyncio.CancelledError, GeneratorExit):
                    # The client went away: stop the replica generating for nobody.
                    rest.cancel()
                    raise
            if usage is None:
                done = await summarizer.count_tokens.remote("".join(parts)) if parts else 0
                usage = _usage(prompt_tokens, done)
                reason = "length" if done >= max_tokens else "stop"
        except Exception as exc:  # the stream already started: report in-band, then stop
            err = to_openai_error(exc) or OpenAIError(
                500, f"Generation failed: {type(exc).__name__}."
            )
            log.warning("chat stream failed: %s", exc)
            yield _sse(openai_error_body(err.message, err.type, err.param, err.code))
            return
        yield _sse(_chunk(cid, created, model, {}, reason, include_usage))
        if include_usage:
            yield _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage,
                }
            )
        yield _sse("[DONE]")

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
