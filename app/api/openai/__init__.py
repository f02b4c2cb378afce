"""OpenAI-compatible endpoints, split like vLLM's entrypoints.

Point an OpenAI SDK at ``<service>/v1`` and it works unchanged::

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="aipp_...")  # any when auth is off
    client.audio.transcriptions.create(model="whisper-1", file=open("a.flac", "rb"))
    client.chat.completions.create(model="qwen2.5-0.5b-instruct-q4_k_m", messages=[...])

- ``protocol``: typed pydantic requests and responses (``Literal`` formats);
- ``errors``: OpenAI's error shape and the route class that applies it;
- ``models``, ``transcriptions``, ``translations``, ``chat``: one router and its serving
  code per endpoint.

Auth and limits are the project's: the caller's API key (checked by ``app/api/guard.py``
before any body is read) on every route, the per-key rate limit on the two POST routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import principal
from app.api.openai import chat, models, transcriptions, translations

router = APIRouter(dependencies=[Depends(principal)])
router.include_router(models.router)
router.include_router(transcriptions.router)
router.include_router(translations.router)
router.include_router(chat.router)

__all__ = ["router"]
