"""The one options vocabulary of a task: what changes its output, and what a request adds.

``ProcessingOptions`` is what a task stores (``Task.options``) and what the cache
key hashes; ``TaskOptions`` is the request body of ``POST /v1/tasks`` (the
processing options plus where the audio comes from and where to call back).
A new per-task knob (e.g. diarization) is one field here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from app.storage.sql.models import Task


class ProcessingOptions(BaseModel):
    """Options that change the result; stored with the task and part of the cache key."""

    model_config = ConfigDict(extra="ignore")

    language: str | None = Field(None, min_length=2, max_length=8, pattern=r"^[a-zA-Z-]+$")
    instruction: str | None = Field(
        None, max_length=2000, description="Extra summary instruction, e.g. 'focus on decisions'."
    )
    diarize: bool = Field(False, description="Label who spoke when (speakers[], segment speaker).")
    min_speakers: int | None = Field(None, ge=1, le=20, description="With diarize: at least.")
    max_speakers: int | None = Field(None, ge=1, le=20, description="With diarize: at most.")
    word_speakers: bool = Field(
        False, description="With diarize: keep word timestamps, each with its speaker."
    )

    @model_validator(mode="after")
    def _speaker_bounds(self) -> ProcessingOptions:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self

    def diarize_options(self) -> dict[str, Any] | None:
        """What the Diarizer gets, or ``None`` when the task is not diarized."""
        if not self.diarize:
            return None
        bounds = {"min_speakers": self.min_speakers, "max_speakers": self.max_speakers}
        out: dict[str, Any] = {k: v for k, v in bounds.items() if v is not None}
        if self.word_speakers:
            out["words"] = True  # popped by Pipeline.run; not a Diarizer option
        return out

    def stored(self) -> dict[str, Any]:
        """The non-empty options, as stored in ``Task.options`` and hashed by the cache."""
        return {
            k: v
            for k, v in self.model_dump(include=set(ProcessingOptions.model_fields)).items()
            if v not in (None, "", False)
        }

    @classmethod
    def of(cls, task: Task) -> ProcessingOptions:
        """The options a stored task runs with (unknown or invalid keys are ignored)."""
        raw = task.options or {}
        known = {k: raw.get(k) for k in cls.model_fields if raw.get(k) not in (None, "")}
        try:
            return cls.model_validate(known)
        except ValueError:
            return cls()


class TaskOptions(ProcessingOptions):
    """Options for POST /v1/tasks (form fields with a file, or a JSON body with audio_url)."""

    # A plain string: the URL guard (app/net/url_guard.py) gives scheme/address errors
    # their own codes.
    audio_url: str | None = Field(
        None, max_length=2048, description="http(s) URL to fetch the audio from."
    )
    webhook_url: HttpUrl | None = Field(None, description="Receives the task when it ends.")

    def task_options(self) -> dict[str, Any]:
        return self.stored()


__all__ = ["ProcessingOptions", "TaskOptions"]
