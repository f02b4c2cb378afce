"""Health, readiness and the synchronous summarize call."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from app.api.uploads import check_audio, read_upload
from app.audio import AudioError
from app.errors import APIError
from app.schemas import SummarizeResult

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


@router.post(
    "/v1/summarize",
    response_model=SummarizeResult,
    tags=["summarize"],
    summary="Transcribe and summarize a short clip synchronously",
    responses={413: {"description": "Too large or too long"}, 422: {"description": "Bad audio"}},
)
async def summarize(
    request: Request,
    file: UploadFile | None = File(None, description="Audio in any format FFmpeg reads."),
    language: str | None = Form(None, description="ISO-639-1 code; detected when omitted."),
) -> SummarizeResult:
    settings = request.app.state.settings
    data = await read_upload(file, settings)
    check_audio(data, settings.sync_max_audio_minutes)
    try:
        return await request.app.state.pipeline.run(data, language=language)
    except AudioError as exc:
        raise APIError(exc.status_code, exc.code, exc.message) from None
