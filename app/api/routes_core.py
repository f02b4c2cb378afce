"""Health, readiness, the synchronous summarize call and the tenant's webhook secret."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import CallerDep, DoorDep, ModelsDep
from app.api.errors import APIError, status_for
from app.api.forms import parse_options, request_body
from app.api.limits import rate_limit
from app.api.routes_tasks import input_source, submit_to
from app.core.schemas import SummarizeResult
from app.core.task_vocabulary import (
    OPEN_STATUSES,
    ProcessingOptions,
    TaskOptions,
    TaskSource,
    TaskStatus,
)

router = APIRouter()


@router.get("/healthz", tags=["health"], summary="Liveness: the ingress answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    summary="Readiness: every model deployment is serving or can start on demand",
)
async def readyz(models_registry: ModelsDep):
    try:
        # The registry's TTL: probes every few seconds cost no model round trips, and
        # past it only a deploy makes the models answer again (Pipeline.ready), so a
        # probe never wakes a model deployment that scaled to zero.
        models = await asyncio.wait_for(models_registry.info(), timeout=5)
    except Exception as exc:  # a replica still starting or dead
        return JSONResponse(
            {"status": "not_ready", "error": {"code": "models_not_ready", "message": str(exc)}},
            status_code=503,
        )
    return {"status": "ready", "models": models}


class WebhookSecret(BaseModel):
    tenant: str
    webhook_secret: str
    scheme: str = "Standard Webhooks: webhook-signature = v1,base64(HMAC-SHA256(secret, ...))"


@router.get(
    "/v1/webhook-secret",
    response_model=WebhookSecret,
    tags=["webhooks"],
    summary="The caller's webhook signing secret, to verify `webhook-signature`",
)
def webhook_secret(caller: CallerDep, door: DoorDep) -> WebhookSecret:
    tenant = door.tenants.get(caller.tenant_id)
    if tenant is None:
        raise APIError(404, "tenant_not_found", "the caller's tenant no longer exists")
    return WebhookSecret(tenant=tenant.name, webhook_secret=tenant.webhook_secret)


@router.post(
    "/v1/summarize",
    response_model=SummarizeResult,
    tags=["summarize"],
    summary="Summarize a short clip (or a transcript) synchronously (the /v1/tasks path)",
    openapi_extra=request_body(ProcessingOptions, json_body=False),
    responses={
        413: {"description": "Too large or too long"},
        422: {"description": "Bad audio"},
        429: {"description": "Rate limited"},
        503: {"description": "Overloaded"},
    },
)
async def summarize(
    request: Request, response: Response, caller: CallerDep, door: DoorDep
) -> SummarizeResult:
    rate_limit(door, caller, response)
    processing, uploads = await parse_options(request, ProcessingOptions, json_body=False)
    if uploads.file is None and uploads.transcript is None:
        raise APIError(422, "missing_file", "the multipart field 'file' is required")
    options = TaskOptions.model_validate(processing.stored())
    sub = await submit_to(
        door,
        request,
        caller,
        options,
        input_source(options, uploads),
        origin=TaskSource.SYNC,
        max_minutes=door.settings.sync_max_audio_minutes,
    )
    timeout = door.settings.sync_max_audio_minutes * 60 * 3 + 60
    # The TaskRunner runs it; wait for its terminal event (with a database re-check).
    task = await door.wait(sub.task.id, timeout)
    response.headers["X-Task-ID"] = sub.task.id
    if task is None:
        raise APIError(410, "task_deleted", "the task was deleted while it ran")
    if task.status == TaskStatus.SUCCEEDED:
        return SummarizeResult.model_validate(task.result)
    if task.status in OPEN_STATUSES:
        raise APIError(
            504,
            "timeout",
            f"still {task.status}; follow /v1/tasks/{task.id}",
            headers={"Location": f"/v1/tasks/{task.id}"},
        )
    code = task.error_code or task.status
    status = status_for(code, 422 if task.status == TaskStatus.FAILED else 409)
    raise APIError(status, code, task.error_message or f"the task was {task.status}")
