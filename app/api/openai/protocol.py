"""Typed requests and responses of the OpenAI-compatible endpoints (like vLLM's ``protocol``).

Validation lives here, as pydantic, not in the routes: a bad value is a
``ValidationError`` that ``errors.from_validation`` turns into OpenAI's 400 with
``param`` naming the field.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.api.openai.languages import language_code

CREATED = int(time.time())

# diarized_json: speaker-labelled segments, as OpenAI's gpt-4o-transcribe-diarize returns.
TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
Granularity = Literal["segment", "word"]

# --- Models ----------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = CREATED
    owned_by: str = "aipp"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- Audio transcriptions ---------------------------------------------------------------


class TranscriptionRequest(BaseModel):
    """The form fields of ``POST /v1/audio/transcriptions`` (the file travels beside them)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = Field(None, max_length=4000)
    response_format: TranscriptionFormat = "json"
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    timestamp_granularities: list[Granularity] = Field(default_factory=list)
    stream: bool | None = None

    @model_validator(mode="after")
    def _stream_formats(self) -> TranscriptionRequest:
        """``stream=true`` sends ``transcript.text.*`` events: text only, as OpenAI's."""
        if self.stream and self.response_format not in ("json", "text"):
            raise ValueError("stream=true works with response_format 'json' or 'text'")
        return self

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = language_code(value)
        if code is None:
            raise ValueError(
                f"'{value}' is not a language Whisper knows; use ISO-639-1 format (e.g. 'en')"
            )
        return code

    @field_validator("timestamp_granularities")
    @classmethod
    def _words_need_verbose(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "word" in value and info.data.get("response_format") != "verbose_json":
            raise ValueError("timestamp_granularities[]=word requires response_format=verbose_json")
        return value

    @property
    def want_words(self) -> bool:
        return "word" in self.timestamp_granularities

    def stt_options(self) -> dict[str, Any]:
        """SttOptions fields; temperature 0 (or none) keeps Whisper's fallback schedule."""
        # diarized_json: words let a segment split where the speaker changes.
        words = self.want_words or self.response_format == "diarized_json"
        options: dict[str, Any] = {"word_timestamps": words}
        if self.language:
            options["language"] = self.language
        if self.prompt:
            options["initial_prompt"] = self.prompt
        if self.temperature:
            options["temperature"] = self.temperature
        return options


class TranscriptionUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: int


class Transcription(BaseModel):
    """``response_format=json``."""

    text: str
    usage: TranscriptionUsage


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float | None
    compression_ratio: float | None
    no_speech_prob: float | None


class TranscriptionVerbose(BaseModel):
    """``response_format=verbose_json``; ``segments``/``words`` as the granularities ask."""

    task: Literal["transcribe"] = "transcribe"
    language: str
    #: Not in OpenAI's shape (clients ignore it): how sure the detection was.
    language_probability: float | None = None
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None
    usage: TranscriptionUsage


# --- Audio translations ----------------------------------------------------------------


class TranslationRequest(BaseModel):
    """The form fields of ``POST /v1/audio/translations``: speech in any language -> English."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str | None = Field(None, max_length=4000)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float | None = Field(None, ge=0.0, le=1.0)

    def stt_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"task": "translate"}
        if self.prompt:
            options["initial_prompt"] = self.prompt
        if self.temperature:
            options["temperature"] = self.temperature
        return options


class TranslationVerbose(BaseModel):
    """``response_format=verbose_json``: ``language`` is the output's (always english)."""

    language: Literal["english"] = "english"
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    #: Not in OpenAI's shape: the language that was spoken, as detected.
    spoken_language: str | None = None


# --- Chat completions ------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def engine_message(self) -> dict[str, str]:
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """A schema the constrained decoder can compile; a malformed one is a 400, not a 500."""
        if value is not None:
            _check_schema(value)
        return value

    @model_validator(mode="after")
    def _schema_present(self) -> JSONSchemaFormat:
        if not self.schema_:
            raise ValueError("response_format json_schema needs 'json_schema.schema'")
        return self


def _check_schema(schema: Any, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError("the schema nests deeper than 32 levels")
    if not isinstance(schema, dict):
        raise ValueError("a schema must be a JSON object")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    allowed = {"object", "array", "string", "number", "integer", "boolean", "null"}
    for k in kinds:
        if k not in allowed:
            raise ValueError(f"unknown schema type {k!r}")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise ValueError("'properties' must be an object")
        for sub in props.values():
            _check_schema(sub, depth + 1)
    required = schema.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    ):
        raise ValueError("'required' must be a list of strings")
    items = schema.get("items")
    if items is not None and not isinstance(items, bool):
        _check_schema(items, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        subs = schema.get(key)
        if subs is not None:
            if not isinstance(subs, list) or not subs:
                raise ValueError(f"'{key}' must be a non-empty list")
            for sub in subs:
                _check_schema(sub, depth + 1)
    enum = schema.get("enum")
    if enum is not None and not (isinstance(enum, list) and enum):
        raise ValueError("'enum' must be a non-empty list")
    ref = schema.get("$ref")
    if ref is not None and not isinstance(ref, str):
        raise ValueError("'$ref' must be a string")


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format json_schema needs 'json_schema.schema'")
        return self

    def schema_for_engine(self) -> dict[str, Any] | None:
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_
        return None


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
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    n: Literal[1] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = Field(None, max_length=0)

    @property
    def requested_tokens(self) -> tuple[str, int | None]:
        """Which limit the caller set (``max_completion_tokens`` wins) and its value."""
        if self.max_completion_tokens is not None:
            return "max_completion_tokens", self.max_completion_tokens
        return "max_tokens", self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[Choice]
    usage: Usage


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, Any]
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChunkChoice",
    "ModelCard",
    "ModelList",
    "ResponseFormat",
    "Transcription",
    "TranscriptionRequest",
    "TranscriptionVerbose",
    "TranslationRequest",
    "TranslationVerbose",
    "Usage",
]
