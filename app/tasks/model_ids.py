"""The model-id registry: which models the deployments serve, cached with a TTL.

One source for readiness (``/readyz``), the runner (cache keys, so a model
upgrade is a different cache entry) and ``/v1/models``. Answers are kept for
``ttl_s``; a failure is never cached (a starting replica is retried on the next
call). Past the TTL, ``Pipeline.ready`` asks Serve's controller first and the
model deployments only after a deploy, so probes never wake a model deployment
that scaled to zero.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)


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

    def learn_in_background(self, retry_s: float = 5.0) -> asyncio.Task:
        """Ask now, on a replica's start, while the model deployments that start with the
        app are up (retrying until they answer). A registry that first asked later might
        find a model deployment scaled to zero and wake it only to learn its id (the
        Diarizer, for a task that does not diarize)."""

        async def learn() -> None:
            while True:
                try:
                    await self.info(max_age_s=math.inf)
                    return
                except Exception as exc:  # replicas still starting
                    logger.info("model ids not known yet (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(retry_s)

        return asyncio.get_running_loop().create_task(learn(), name="model-ids")

    async def ids(self, max_age_s: float | None = None) -> dict[str, str | None]:
        """``{role: model id}`` for every model that shapes a result (the cache key), the
        diarizer included (``None`` when the app has no Diarizer)."""
        info = await self.info(max_age_s)
        return {role: (part or {}).get("model") for role, part in info.items()}


__all__ = ["ModelRegistry"]
