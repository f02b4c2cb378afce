"""Build the FastAPI app: routers, error handlers, request ids, the task worker's lifetime."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from app import __version__
from app.api.errors import install_error_handlers
from app.tasks.pipeline import Pipeline
from app.storage.clients import Services
from app.tasks.runner import TaskWorker


def create_app(pipeline: Pipeline, services: Services) -> FastAPI:
    from app.api import routes_core, routes_openai, routes_tasks
    from app.planner.api import router as planner_router

    worker = TaskWorker(services, pipeline)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Serve runs the ASGI lifespan on each replica: the worker loop lives as long as it.
        worker.start()
        yield
        await worker.stop()

    api = FastAPI(
        title="AI Processing Platform",
        version=__version__,
        description="Audio in, transcript and structured summary out. Ray Serve on CPU or GPU.",
        docs_url="/docs",
        lifespan=lifespan,
    )
    api.state.pipeline = pipeline
    api.state.services = services
    api.state.settings = services.settings
    api.state.worker = worker
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
    api.include_router(routes_openai.router)
    api.include_router(planner_router)
    return api
