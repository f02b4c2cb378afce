"""Build the FastAPI app: routers, error handlers, request ids (tasks run in the TaskRunner)."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request

from app import __version__
from app.api import deps
from app.api.auth import Authenticator
from app.api.errors import install_error_handlers
from app.api.guard import HTTPGuard, depends_on, policy_from
from app.storage.clients import Services
from app.tasks.model_ids import ModelRegistry
from app.tasks.pipeline import Pipeline


def create_app(pipeline: Pipeline, services: Services, runner: object | None = None) -> FastAPI:
    """``runner`` is the TaskRunner's DeploymentHandle (a wake-up path without Redis)."""
    from app.api import openai, routes_core, routes_speakers, routes_tasks
    from app.api.console import router as console_router
    from app.planner.api import router as planner_router

    api = FastAPI(
        title="AI Processing Platform",
        version=__version__,
        description="Audio in, transcript and structured summary out. Ray Serve on CPU or GPU.",
        docs_url="/docs",
    )
    api.state.pipeline = pipeline
    api.state.services = services
    # API keys are an HTTP concern: built here, not in the storage layer's clients.
    authenticator = Authenticator(services.engine, services.settings)
    api.state.authenticator = authenticator
    api.state.settings = services.settings
    api.state.models = ModelRegistry(pipeline.ready, services.settings.model_ids_ttl_s)
    api.state.runner = runner
    install_error_handlers(api)

    @api.middleware("http")
    async def request_id(request: Request, call_next):
        # Serve's proxy already honours an incoming X-Request-ID (or makes one) and
        # echoes it; we only make it visible to routes and logs.
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        return await call_next(request)

    api.include_router(routes_core.router)
    api.include_router(routes_tasks.router)
    api.include_router(routes_speakers.router)
    api.include_router(openai.router)
    api.include_router(planner_router)
    api.include_router(console_router)
    # Outermost: untrusted hosts, cross-site posts, oversize bodies and missing keys are
    # refused before any route reads a body (app/api/guard.py).
    api.add_middleware(
        HTTPGuard,
        policy=policy_from(services.settings, authenticator.required),
        authenticator=authenticator,
        router=api.router,
        needs_caller=lambda route: depends_on(route, deps.principal),
    )
    return api
