"""The model-id registry: which models the deployments serve, cached with a TTL.

One source for readiness (``/readyz``), the runner (cache keys, so a model
upgrade is a different cache entry) and ``/v1/models``. Asking the deployments
costs two handle calls, so answers are kept for ``ttl_s``; a failure is never
cached (a starting replica is retried on the next call).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class ModelRegistry:
    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]], ttl_s: float = 60.0) -> None:
        """``fetch`` returns ``{"stt": {"model": ...}, "llm": {"model": ...}, "diarizer": ...}``
        (Pipeline.ready; ``"diarizer"`` is ``None`` or absent in an app without one)."""
        self._fetch = fetch
        self.ttl_s = ttl_s
        self._info: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def info(self, max_age_s: float | None = None) -> dict[str, Any]:
        """The deployments' info, at most ``max_age_s`` (default: the TTL) old."""
        age = self.ttl_s if max_age_s is None else max_age_s
        if self._info is not None and time.monotonic() - self._at <= age:
            return self._info
        async with self._lock:
            if self._info is not None and time.monotonic() - self._at <= age:
                return self._info
            info = await self._fetch()
            self._info, self._at = info, time.monotonic()
            return info

    async def ids(self, max_age_s: float | None = None) -> dict[str, str | None]:
        """``{role: model id}`` for every model that shapes a result (the cache key), the
        diarizer included (``None`` when the app has no Diarizer)."""
        info = await self.info(max_age_s)
        return {role: (part or {}).get("model") for role, part in info.items()}


__all__ = ["ModelRegistry"]
