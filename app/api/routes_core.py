"""Health, readiness, the synchronous summarize call and the tenant's webhook secret."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from app.api.deps import CallerDep, ModelsDep, ServicesDep
from app.api.errors import APIError, status_for
from app.api.limits import rate_limit
from app.api.routes_tasks import submit_request
from app.core.schemas import SummarizeResult
from app.storage.sql import keys
from app.storage.sql.models import TaskSource
from app.tasks.options import TaskOptions
from app.tasks.waiting import wait_for_terminal

router = APIRouter()


@router.get("/healthz", tags=["health"], summary="Liveness: the ingress answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="Readiness: both models are loaded")
async def readyz(models_registry: ModelsDep):
    try:
        # The registry's TTL: probes every few seconds cost no model round trips.
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
def webhook_secret(caller: CallerDep, services: ServicesDep, response: Response) -> WebhookSecret:
    tenant = keys.get_tenant(services.engine, caller.tenant_id)
    if tenant is None:
        raise APIError(404, "tenant_not_found", "the caller's tenant no longer exists")
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecret(tenant=tenant.name, webhook_secret=tenant.webhook_secret)


@router.post(
    "/v1/summarize",
    response_model=SummarizeResult,
    tags=["summarize"],
    summary="Transcribe and summarize a short clip synchronously (same task path as /v1/tasks)",
    responses={
        413: {"description": "Too large or too long"},
        422: {"description": "Bad audio"},
        429: {"description": "Rate limited"},
        503: {"description": "Overloaded"},
    },
)
async def summarize(
    request: Request,
    response: Response,
    file: UploadFile | None = File(None, description="Audio in any format FFmpeg reads."),
    language: str | None = Form(None, description="ISO-639-1 code; detected when omitted."),
    instruction: str | None = Form(None, description="Extra summary instruction."),
    diarize: bool = Form(False, description="Label who spoke when."),
    min_speakers: int | None = Form(None, ge=1, le=20, description="With diarize: at least."),
    max_speakers: int | None = Form(None, ge=1, le=20, description="With diarize: at most."),
    *,
    caller: CallerDep,
    services: ServicesDep,
) -> SummarizeResult:
    rate_limit(services, caller, response)
    try:
        options = TaskOptions(
            language=language,
            instruction=instruction,
            diarize=diarize,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
        )
    except ValidationError as exc:
        raise APIError(422, "invalid_request", exc.errors()[0].get("msg", "invalid")) from None
    if file is None:
        raise APIError(422, "missing_file", "the multipart field 'file' is required")
    sub = await submit_request(
        request,
        caller,
        options,
        file,
        source=TaskSource.SYNC,
        max_minutes=services.settings.sync_max_audio_minutes,
    )
    task = sub.task
    timeout = services.settings.sync_max_audio_minutes * 60 * 3 + 60
    # The TaskRunner runs it; wait for its terminal event (with a database re-check).
    task = await wait_for_terminal(services, task.id, timeout)
    response.headers["X-Task-ID"] = task.id if task else ""
    if task is None:
        raise APIError(410, "task_deleted", "the task was deleted while it ran")
    if task.status == "succeeded":
        return SummarizeResult.model_validate(task.result)
    if task.status in ("queued", "transcribing", "summarizing"):
        raise APIError(
            504,
            "timeout",
            f"still {task.status}; follow /v1/tasks/{task.id}",
            headers={"Location": f"/v1/tasks/{task.id}"},
        )
    code = task.error_code or task.status
    status = status_for(code, 422 if task.status == "failed" else 409)
    raise APIError(status, code, task.error_message or f"the task was {task.status}")
