"""HTTP face of the planner: ``POST /v1/plan``, its option lists, and the ``/planner`` page.

It lives in the API layer so the planner stays free of HTTP: the planner raises its own
errors (:class:`CatalogError`, :class:`PlannerInputError`, :class:`WorkBudgetExceeded`) and
this module maps them to the project's ``{"error": {"code", "message"}}`` shape, with a
``field`` key on 422s so the page can put the message next to the input that caused it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

import app.planner
from app.api.errors import APIError
from app.planner.catalog import CATALOG_ENV, Catalog, CatalogError, Source, load_catalog
from app.planner.plan import plan
from app.planner.presets import PRESETS
from app.planner.queueing import WorkBudgetExceeded
from app.planner.schemas import PlanInput, PlannerInputError, PlanResult

# At most this many plans compute at once, in their own worker threads: planning never
# takes the threads that sync routes of the task API share (AnyIO's default limiter).
PLANNER_CONCURRENCY = 2
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _limiter() -> CapacityLimiter:
    loop = asyncio.get_running_loop()
    lim = _limiters.get(loop)
    if lim is None:
        lim = _limiters[loop] = CapacityLimiter(PLANNER_CONCURRENCY)
    return lim


STATIC_DIR = Path(app.planner.__file__).with_name("static")

router = APIRouter()


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = Field(None, description="The request field at fault (422 only).")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class GpuOption(BaseModel):
    instance_type: str
    gpus_per_instance: int
    vram_gb: float
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float


class PlannerOptions(BaseModel):
    gpus: dict[str, GpuOption]
    stt_models: dict[str, list[str]] = Field(description="Model -> GPU types it has a profile for.")
    llm_models: dict[str, list[str]] = Field(description="Model -> GPU types it has a profile for.")
    bedrock_models: list[str]
    retired_bedrock_models: list[str] = Field(description="Past end of life: plans warn.")
    lifecycle: dict[str, str] = Field(
        description="Bedrock model -> active | legacy | soon (end of life within six months) "
        "| retired, as of today."
    )
    managed_stt: list[str] = Field(description="Managed speech-to-text APIs to compare with.")
    support_plans: list[str] = Field(description="AWS support plans the catalog prices.")
    catalog_as_of: str
    presets: dict[str, dict[str, Any]]
    defaults: dict[str, Any]
    sources: dict[str, Source]


_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid input; `error.field` names it."},
    500: {"model": ErrorResponse, "description": "The planner catalog is invalid."},
}


@lru_cache(maxsize=4)
def _load(path: str | None, mtime: float | None) -> Catalog:
    return load_catalog(path, use_env=False)


def get_catalog() -> Catalog:
    """The catalog (with ``$AIPP_PLANNER_CATALOG`` merged), reloaded when that file changes."""
    path = os.environ.get(CATALOG_ENV) or None
    mtime = None
    if path:
        try:
            mtime = Path(path).stat().st_mtime
        except OSError:
            mtime = None
    try:
        return _load(path, mtime)
    except CatalogError as exc:
        raise APIError(500, "catalog_invalid", str(exc)) from None


@router.post(
    "/v1/plan",
    response_model=PlanResult,
    tags=["planner"],
    summary="Size GPUs and compare self-hosted with managed monthly cost",
    responses=_ERRORS,
)
async def create_plan(body: PlanInput) -> PlanResult:
    catalog = get_catalog()
    try:
        return await anyio.to_thread.run_sync(plan, body, catalog, limiter=_limiter())
    except PlannerInputError as exc:
        raise APIError(
            422, "invalid_request", f"{exc.field}: {exc.message}", extra={"field": exc.field}
        ) from None
    except WorkBudgetExceeded as exc:
        raise APIError(
            422, "invalid_request", f"tasks_per_month: {exc}", extra={"field": "tasks_per_month"}
        ) from None


@router.get(
    "/v1/plan/options",
    response_model=PlannerOptions,
    tags=["planner"],
    summary="GPU types, models, presets and defaults the planner accepts",
    responses={500: _ERRORS[500]},
)
def plan_options() -> PlannerOptions:
    catalog = get_catalog()
    today = dt.date.today()
    defaults = {
        name: f.default for name, f in PlanInput.model_fields.items() if not f.is_required()
    }
    states = {n: m.life().state(today)[0] for n, m in catalog.managed.bedrock.items()}
    return PlannerOptions(
        gpus={
            name: GpuOption(**g.model_dump(include=set(GpuOption.model_fields)))
            for name, g in catalog.gpus.items()
        },
        stt_models={n: list(m.profiles) for n, m in catalog.stt_models.items()},
        llm_models={n: list(m.profiles) for n, m in catalog.llm_models.items()},
        bedrock_models=list(catalog.managed.bedrock),
        retired_bedrock_models=[n for n, st in states.items() if st == "retired"],
        lifecycle=states,
        managed_stt=["aws-transcribe", *catalog.managed.stt_apis],
        support_plans=["none", *catalog.support_plans],
        catalog_as_of=catalog.as_of,
        presets={n: dict(v) for n, v in PRESETS.items()},
        defaults=defaults,
        sources=catalog.sources,
    )


@router.get(
    "/v1/plan/catalog",
    response_model=Catalog,
    tags=["planner"],
    summary="The full catalog in use, with every source and date",
    responses={500: _ERRORS[500]},
)
def plan_catalog() -> Catalog:
    return get_catalog()


# The page and its assets hold no data: public, so a browser can load them; the page's
# script sends the console's key (same origin) to the API routes above.
page_router = APIRouter()


@page_router.get("/planner", response_class=HTMLResponse, include_in_schema=False)
def planner_page() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "planner.html").read_text(encoding="utf-8"))


@page_router.get("/planner/planner.js", include_in_schema=False)
def planner_js() -> FileResponse:
    return FileResponse(STATIC_DIR / "planner.js", media_type="text/javascript")


@page_router.get("/planner/planner.css", include_in_schema=False)
def planner_css() -> FileResponse:
    return FileResponse(STATIC_DIR / "planner.css", media_type="text/css")
