"""The words of a task's life, in one place: its statuses, its options and its events.

Every layer speaks them: storage keeps the status and the stored options in the
task row, the task layer runs and announces, the API documents and parses the
options, the CLI and batch read events. So they live in ``core``, the floor that
everyone may import, and nowhere else: a new status, option or event field is one
edit here.

- :class:`TaskStatus`, :data:`TERMINAL_STATUSES`, :class:`TaskSource`.
- :class:`ProcessingOptions`: what changes a result (stored with the task, part of
  the cache key); :class:`TaskOptions`: a submission's options (adds where the audio
  comes from and where to call back). The API's multipart and JSON schemas are
  generated from these models, so the docs cannot drift from what is accepted.
- :func:`task_event` / :func:`event_of`: the one event shape (Redis pub/sub, SSE).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.core.languages import language_code, language_codes
from app.core.pii_terms import ALL_ENTITIES, MASK, PiiEntity, RedactMode, parse_policy
from app.core.safe_text import check_storable, multi_line

# --- Statuses -------------------------------------------------------------------


class TaskStatus(StrEnum):
    QUEUED = "queued"
    TRANSCRIBING = "transcribing"
    SUMMARIZING = "summarizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def running(self) -> bool:
        return self in RUNNING_STATUSES


#: The one terminal set. ``TaskStatus`` is a ``StrEnum``, so plain strings test
#: membership too (``task.status in TERMINAL_STATUSES``).
TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
RUNNING_STATUSES = frozenset({TaskStatus.TRANSCRIBING, TaskStatus.SUMMARIZING})
#: Not ended yet: queued or running.
OPEN_STATUSES = frozenset(set(TaskStatus) - TERMINAL_STATUSES)


class TaskSource(StrEnum):
    API = "api"  # POST /v1/tasks: queued, processed by a worker
    BATCH = "batch"  # written by a Ray Data batch job, born finished
    SYNC = "sync"  # the synchronous endpoint, recorded after the fact
    LIVE = "live"  # a realtime WebSocket session's audio, queued when the session ends


class InputKind(StrEnum):
    """What a task was given: audio to transcribe, or a transcript someone already has."""

    AUDIO = "audio"
    TRANSCRIPT = "transcript"


class WebhookState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # a 2xx came back
    FAILED = "failed"  # refused (4xx) or out of attempts


# --- Options --------------------------------------------------------------------


class ProcessingOptions(BaseModel):
    """Options that change the result; stored with the task and part of the cache key."""

    model_config = ConfigDict(extra="ignore")

    language: str | None = Field(
        None,
        min_length=2,
        max_length=8,
        pattern=r"^[a-zA-Z-]+$",
        description="ISO-639-1 code; detected when omitted.",
    )
    languages: list[str] | None = Field(
        None,
        max_length=20,
        description="Expected languages (ISO-639-1 codes, comma-separated in a form, e.g. "
        "`de,fr`): detection picks among these only.",
    )
    translate_to: Literal["en"] | None = Field(
        None, description="`en`: an English translation beside the original transcript."
    )
    summary_language: str | None = Field(
        None,
        max_length=20,
        description="ISO-639-1 code (or English name) of the summary's language; default the "
        "transcript's. Evidence quotes stay in the spoken language.",
    )
    instruction: str | None = Field(
        None, max_length=2000, description="Extra summary instruction, e.g. 'focus on decisions'."
    )
    summarize: bool = Field(
        True,
        description="`false`: the transcript only; the LLM is not called (a task ends "
        "when speech to text does). The result's summary is then empty, with method "
        "`skipped`.",
    )
    diarize: bool = Field(
        False,
        description="Label who spoke when (speakers[], segment speaker; transcript."
        "speaker_count: the estimate, its confidence and the overlapped seconds).",
    )
    min_speakers: int | None = Field(None, ge=1, le=20, description="With diarize: at least.")
    max_speakers: int | None = Field(None, ge=1, le=20, description="With diarize: at most.")
    word_speakers: bool = Field(
        False, description="With diarize: keep word timestamps, each with its speaker."
    )
    redact_pii: bool = Field(
        False,
        description="Redact personal data from the transcript, words, subtitles, summary "
        "and evidence before anything is stored, cached, indexed or sent.",
    )
    redact_policy: str | None = Field(
        None,
        max_length=200,
        description="With redact_pii: comma-separated entities to redact (default all): "
        + ", ".join(e.value for e in PiiEntity)
        + ".",
    )
    redact_mode: RedactMode = Field(
        RedactMode.LABEL,
        description="With redact_pii: `label` ([PHONE_NUMBER]), `mask` (a fixed "
        f"{MASK}) or `pseudonym` ([PERSON_1], the same person the same all through).",
    )
    redact_audio: bool = Field(
        False,
        description="With redact_pii: keep a copy of the audio with the redacted words "
        "replaced by a tone; the original is deleted unless redact_keep_original.",
    )
    redact_keep_original: bool = Field(
        False, description="With redact_audio: keep the unredacted original audio too."
    )
    #: Set by the task layer from the input's kind, never by a caller (not in the API's
    #: schemas); a transcript skips speech to text.
    input: SkipJsonSchema[InputKind] = InputKind.AUDIO

    @field_validator("instruction")
    @classmethod
    def _clean_instruction(cls, value: str | None) -> str | None:
        # NUL and lone surrogates: a 4xx naming the field, not a database error (a 500 on
        # PostgreSQL). Other control and bidi characters are dropped; newlines stay.
        if value is None:
            return None
        return multi_line(check_storable(value)) or None

    @field_validator("redact_policy")
    @classmethod
    def _canonical_policy(cls, value: str | None) -> str | None:
        # One spelling per policy, so the cache key does not depend on order or case.
        if value is None or not value.strip():
            return None
        entities = parse_policy(value)
        return None if entities == ALL_ENTITIES else ",".join(entities)

    @field_validator("languages", mode="before")
    @classmethod
    def _language_list(cls, value: Any) -> list[str] | None:
        return language_codes(value)

    @field_validator("language", "summary_language")
    @classmethod
    def _summary_language(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = language_code(value)
        if code is None:
            raise ValueError(f"'{value}' is not a language Whisper knows; use ISO-639-1 codes")
        return code

    @model_validator(mode="after")
    def _speaker_bounds(self) -> ProcessingOptions:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self

    def diarize_options(self) -> dict[str, Any] | None:
        """What the Diarizer gets (speaker bounds), or ``None`` when not diarized."""
        if not self.diarize:
            return None
        bounds = {"min_speakers": self.min_speakers, "max_speakers": self.max_speakers}
        return {k: v for k, v in bounds.items() if v is not None}

    def stored(self) -> dict[str, Any]:
        """The options that differ from their defaults, as stored in ``Task.options`` and
        hashed by the cache (so a new option with a default changes no existing key)."""
        fields = ProcessingOptions.model_fields
        return {
            k: v
            for k, v in self.model_dump(mode="json", include=set(fields)).items()
            # ``is not None``: ``summarize=False`` differs from its default True and is kept.
            if v is not None and v != "" and v != fields[k].default
        }

    @classmethod
    def from_stored(cls, raw: dict[str, Any] | None) -> ProcessingOptions:
        """The options a stored task runs with (unknown or invalid keys are ignored)."""
        raw = raw or {}
        known = {k: raw.get(k) for k in cls.model_fields if raw.get(k) not in (None, "")}
        try:
            return cls.model_validate(known)
        except ValueError:
            return cls()


class TaskOptions(ProcessingOptions):
    """A submission's options: form fields beside a file, or a JSON body with audio_url."""

    # A plain string: the URL guard (app/net/url_guard.py) gives scheme/address errors
    # their own codes.
    audio_url: str | None = Field(
        None, max_length=2048, description="http(s) URL to fetch the audio from."
    )
    webhook_url: HttpUrl | None = Field(None, description="Receives the task when it ends.")

    @field_validator("audio_url")
    @classmethod
    def _printable_url(cls, value: str | None) -> str | None:
        # Stored and shown as sent: nothing a URL cannot hold (the guard judges the rest).
        if value is None:
            return None
        value = check_storable(value).strip()
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("must be a URL without spaces or control characters")
        return value or None

    def processing(self) -> ProcessingOptions:
        return ProcessingOptions.model_validate(self.stored())


# --- Events ---------------------------------------------------------------------


class TaskLike(Protocol):
    """What :func:`event_of` reads from a task row (``app.storage.sql.models.Task``)."""

    id: str
    status: str
    cached: bool | None
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None


def task_event(task_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """The one event shape: ``{"task_id", "status", ...}``.

    Extras in use: ``progress`` ({transcribed_s, total_s}), ``attempt``, ``cached``,
    ``summary``, ``error`` ({code, message}), ``retrying``, ``released``,
    ``cancel_requested``, ``deleted``.
    """
    return {"task_id": task_id, "status": str(status), **extra}


def event_of(task: TaskLike, **extra: Any) -> dict[str, Any]:
    """The event for a task's current state (also the SSE snapshot)."""
    fields: dict[str, Any] = {}
    if task.status in TERMINAL_STATUSES:
        fields["cached"] = bool(task.cached)
    if task.status == TaskStatus.SUCCEEDED and task.result:
        fields["summary"] = task.result.get("summary")
    if task.error_code and task.status != TaskStatus.SUCCEEDED:
        fields["error"] = {"code": task.error_code, "message": task.error_message}
    return task_event(task.id, task.status, **fields, **extra)


def is_progress(event: dict[str, Any]) -> bool:
    """A progress tick (same status, further along), not a change of status."""
    return "progress" in event and event.get("status") in RUNNING_STATUSES


__all__ = [
    "OPEN_STATUSES",
    "InputKind",
    "RUNNING_STATUSES",
    "TERMINAL_STATUSES",
    "ProcessingOptions",
    "TaskOptions",
    "TaskSource",
    "TaskStatus",
    "WebhookState",
    "event_of",
    "is_progress",
    "task_event",
]
