"""Health, readiness and the synchronous summarize call."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from app.api.deps import principal, services_of, worker_of
from app.tasks.submit import TaskOptions, rate_limit, submit
from app.api.auth import Principal
from app.storage.sql.models import TaskSource
from app.api.errors import APIError
from app.core.schemas import SummarizeResult

router = APIRouter()


@router.get("/healthz", tags=["health"], summary="Liveness: the ingress answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="Readiness: both models are loaded")
async def readyz(request: Request):
    pipeline = request.app.state.pipeline
    try:
        models = await asyncio.wait_for(pipeline.ready(), timeout=5)
    except Exception as exc:  # a replica still starting or dead
        return JSONResponse(
            {"status": "not_ready", "error": {"code": "models_not_ready", "message": str(exc)}},
            status_code=503,
        )
    return {"status": "ready", "models": models}


# Status codes for task failures that the synchronous call reports as 4xx/5xx.
_FAILURE_STATUS = {
    "audio_too_long": 413,
    "transient_error": 503,
    "worker_lost": 503,
    "internal_error": 500,
}


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
    caller: Principal = Depends(principal),
) -> SummarizeResult:
    services = services_of(request)
    worker = worker_of(request)
    rate_limit(services, caller, response)
    options = TaskOptions(language=language, instruction=instruction)
    if file is None:
        raise APIError(422, "missing_file", "the multipart field 'file' is required")
    sub = await submit(
        request,
        caller,
        options,
        file,
        source=TaskSource.SYNC,
        max_minutes=services.settings.sync_max_audio_minutes,
    )
    task = sub.task
    timeout = services.settings.sync_max_audio_minutes * 60 * 3 + 60
    task = await worker.wait_for(task.id, timeout)
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
    status = _FAILURE_STATUS.get(code, 422 if task.status == "failed" else 409)
    raise APIError(status, code, task.error_message or f"the task was {task.status}")
