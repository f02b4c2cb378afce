"""FastAPI dependencies: the replica's services, its task worker, and the calling tenant."""

from __future__ import annotations

from fastapi import Header, Request

from app.api.auth import Principal
from app.storage.clients import Services
from app.tasks.runner import TaskWorker


def services_of(request: Request) -> Services:
    return request.app.state.services


def worker_of(request: Request) -> TaskWorker:
    return request.app.state.worker


def principal(request: Request, authorization: str | None = Header(default=None)) -> Principal:
    """Bearer API key → tenant (plain ``def``: FastAPI runs the DB lookup in its threadpool)."""
    return services_of(request).authenticator.authenticate(authorization)
