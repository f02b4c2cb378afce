"""Build the FastAPI app: routers, error handlers, request ids."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request

from app import __version__
from app.errors import install_error_handlers
from app.pipeline import Pipeline
from app.settings import get_settings


def create_app(pipeline: Pipeline) -> FastAPI:
    from app.api import routes_core

    api = FastAPI(
        title="AI Processing Platform",
        version=__version__,
        description="Audio in, transcript and structured summary out. Ray Serve on CPU or GPU.",
        docs_url="/docs",
    )
    api.state.pipeline = pipeline
    api.state.settings = get_settings()
    install_error_handlers(api)

    @api.middleware("http")
    async def request_id(request: Request, call_next):
        # Serve's proxy already honours an incoming X-Request-ID (or makes one) and
        # echoes it; we only make it visible to routes and logs.
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        return await call_next(request)

    api.include_router(routes_core.router)
    try:  # BOOTSTRAP-GUARD: removed once the planner lands
        from app.planner.api import router as planner_router

        api.include_router(planner_router)
    except ImportError:
        pass
    return api
