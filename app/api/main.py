"""Build the FastAPI app: routers, error handlers, request ids (tasks run in the TaskRunner)."""

from __future__ import annotations

import uuid

from fastapi import Depends, FastAPI, Request

from app import __version__
from app.api import deps
from app.api.auth import Authenticator
from app.api.errors import install_error_handlers
from app.api.guard import HTTPGuard, depends_on, policy_from
from app.api.headers import PrivateResponses
from app.tasks.door import TaskDoor
from app.tasks.pipeline import Pipeline


def create_app(pipeline: Pipeline, door: TaskDoor) -> FastAPI:
    """``pipeline``: the model deployments (synchronous OpenAI routes); ``door``: tasks."""
    from app.api import docs_pages, openai, routes_core, routes_speakers, routes_tasks
    from app.api.console import router as console_router
    from app.api.realtime import router as realtime_router
    from app.api.routes_planner import page_router as planner_page
    from app.api.routes_planner import router as planner_router

    api = FastAPI(
        title="AI Processing Platform",
        version=__version__,
        description="Audio in, transcript and structured summary out. Ray Serve on CPU or GPU.",
        # Self-hosted docs pages (app/api/docs_pages.py): no CDN scripts on our origin.
        docs_url=None,
        redoc_url=None,
    )
    api.state.pipeline = pipeline
    api.state.door = door
    # API keys are an HTTP concern: built here, over the door's tenants.
    authenticator = Authenticator(door.tenants, door.settings)
    api.state.authenticator = authenticator
    api.state.settings = door.settings
    api.state.models = door.models
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
    # WebSocket: authenticated by the route itself (the HTTP guard sees only HTTP).
    api.include_router(realtime_router)
    # Keys on means keys everywhere, the planner's API included, unless the operator opens
    # it (AIPP_OPEN_ROUTES); its page holds no data and stays public.
    planner_open = "/v1/plan" in door.settings.open_routes
    api.include_router(
        planner_router, dependencies=[] if planner_open else [Depends(deps.principal)]
    )
    api.include_router(planner_page)
    api.include_router(console_router)
    api.include_router(docs_pages.router)
    # Outermost: untrusted hosts, cross-site posts, oversize bodies and missing keys are
    # refused before any route reads a body (app/api/guard.py).
    api.add_middleware(
        HTTPGuard,
        policy=policy_from(door.settings, authenticator.required),
        authenticator=authenticator,
        router=api.router,
        needs_caller=lambda route: depends_on(route, deps.principal),
    )
    # Outermost of all: the guard's own refusals carry the private headers too.
    api.add_middleware(PrivateResponses)
    return api
