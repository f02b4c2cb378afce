"""FastAPI dependencies: the replica's clients, the model-id registry, and the calling tenant.

Routes take the typed aliases (``ServicesDep``, ``ModelsDep``, ``CallerDep``)
instead of reaching into ``request.app.state``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.api.auth import Principal
from app.api.errors import APIError
from app.storage.clients import Services
from app.tasks.model_ids import ModelRegistry
from app.tasks.pipeline import Pipeline
from app.tasks.submit import Refusal, SubmissionError


def services_of(request: Request) -> Services:
    return request.app.state.services


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
    """The handles to the model deployments (Transcriber, Summarizer)."""
    return request.app.state.pipeline


ServicesDep = Annotated[Services, Depends(services_of)]
PipelineDep = Annotated[Pipeline, Depends(pipeline_of)]
ModelsDep = Annotated[ModelRegistry, Depends(models_of)]
CallerDep = Annotated[Principal, Depends(principal)]

_REFUSAL_STATUS = {Refusal.BAD_REQUEST: 400, Refusal.INVALID: 422, Refusal.IN_FLIGHT: 409}


def submission_error(exc: SubmissionError) -> APIError:
    """The HTTP answer for a refused submission (the task layer knows no HTTP)."""
    headers = {"Retry-After": "1"} if exc.kind is Refusal.IN_FLIGHT else None
    return APIError(_REFUSAL_STATUS[exc.kind], exc.code, exc.message, headers=headers)
