"""``GET /v1/models`` and ``GET /v1/models/{id}``: the served models, from one cached registry."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from app.api.deps import ModelsDep
from app.api.openai.errors import OpenAIError, OpenAIRoute, not_found
from app.api.openai.protocol import ModelCard, ModelList

STT_ALIASES = ("whisper-1", "whisper")

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])


async def served_models(registry: ModelsDep) -> dict[str, dict[str, Any]]:
    """``{"stt": Transcriber.info(), "llm": Summarizer.info()}`` from the app's model registry
    (TTL-cached, shared with readiness and the runner); not ready is a 503, never cached."""
    try:
        return await asyncio.wait_for(registry.info(), timeout=30)
    except Exception as exc:
        raise OpenAIError(
            503,
            f"The models are not ready: {type(exc).__name__}.",
            code="models_not_ready",
            headers={"Retry-After": "5"},
        ) from None


ServedModels = Annotated[dict[str, dict[str, Any]], Depends(served_models)]


@router.get("/v1/models", summary="List the served models (OpenAI-compatible)")
async def list_models(models: ServedModels) -> ModelList:
    return ModelList(
        data=[ModelCard(id=models["stt"]["model"]), ModelCard(id=models["llm"]["model"])]
    )


@router.get("/v1/models/{model_id:path}", summary="One served model (OpenAI-compatible)")
async def retrieve_model(model_id: str, models: ServedModels) -> ModelCard:
    if model_id not in {models["stt"]["model"], models["llm"]["model"], *STT_ALIASES}:
        raise not_found(model_id)
    return ModelCard(id=model_id)
