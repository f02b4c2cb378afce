"""FastAPI dependencies: the task door, the model-id registry, the pipeline and the caller.

Routes take the typed aliases (``DoorDep``, ``ModelsDep``, ``CallerDep``) instead of
reaching into ``request.app.state``; everything about tasks and their state goes
through the door (``app/tasks/door.py``), never to storage directly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.api.auth import Principal
from app.api.errors import APIError, to_api_error
from app.net.url_guard import URLFetchError
from app.speech.audio import AudioError
from app.speech.transcript_files import TranscriptFileError
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry
from app.tasks.pipeline import Pipeline
from app.tasks.sources import InputRefused
from app.tasks.submit import Refusal, SubmissionError


def door_of(request: Request) -> TaskDoor:
    return request.app.state.door


def models_of(request: Request) -> ModelRegistry:
    """The model-id registry (TTL-cached): readiness, cache keys, /v1/models."""
    return request.app.state.models


def principal(request: Request, authorization: str | None = Header(default=None)) -> Principal:
    """Bearer API key → tenant (plain ``def``: FastAPI runs the DB lookup in its threadpool)."""
    found = getattr(request.state, "principal", None)  # app/api/guard.py checked it already
    if found is not None:
        return found
    return request.app.state.authenticator.authenticate(authorization)


def pipeline_of(request: Request) -> Pipeline:
    """The handles to the model deployments (Transcriber, Summarizer, Diarizer)."""
    return request.app.state.pipeline


DoorDep = Annotated[TaskDoor, Depends(door_of)]
PipelineDep = Annotated[Pipeline, Depends(pipeline_of)]
ModelsDep = Annotated[ModelRegistry, Depends(models_of)]
CallerDep = Annotated[Principal, Depends(principal)]

_REFUSAL_STATUS = {
    Refusal.BAD_REQUEST: 400,
    Refusal.INVALID: 422,
    Refusal.IN_FLIGHT: 409,
    Refusal.UNAVAILABLE: 503,
}
_RETRY_AFTER = {Refusal.IN_FLIGHT: "1", Refusal.UNAVAILABLE: "5"}

#: What a submission may refuse with: the task layer's own refusals and the input's errors.
SUBMISSION_ERRORS = (SubmissionError, InputRefused, AudioError, URLFetchError, TranscriptFileError)


def submission_error(exc: Exception) -> APIError:
    """The HTTP answer for a refused submission (the task layer knows no HTTP)."""
    if isinstance(exc, SubmissionError):
        retry = _RETRY_AFTER.get(exc.kind)
        headers = {"Retry-After": retry} if retry else None
        return APIError(_REFUSAL_STATUS[exc.kind], exc.code, exc.message, headers=headers)
    if isinstance(exc, InputRefused):
        return APIError(413 if exc.too_large else 422, exc.code, exc.message)
    if isinstance(exc, AudioError | URLFetchError):
        return to_api_error(exc)
    if isinstance(exc, TranscriptFileError):
        return APIError(413 if exc.code == "transcript_too_large" else 422, exc.code, exc.message)
    raise TypeError(f"not a submission error: {exc!r}")
