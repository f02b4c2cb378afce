"""The result cache as tasks use it: one key, built in one place, from everything that
shapes a result.

A result depends on the audio, the tenant (one tenant's upload never tells
another that the same audio was seen), the processing options, and every model
that served it: speech to text, the LLM and the diarizer. :func:`result_key` is
the only function that puts those together, so submit, the runner, DELETE and
the retention purge cannot disagree, and a change of any model is a new entry.
A cache outage is a miss; nothing here raises for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.task_vocabulary import ProcessingOptions
from app.storage.clients import Services
from app.storage.redis.cache import cache_key
from app.storage.sql.models import Task

#: The models that shape a result; a registry answer without one of them still keys
#: on its absence (e.g. no Diarizer deployment), so adding it later is a new entry.
MODEL_ROLES = ("stt", "llm", "diarizer")


@dataclass(frozen=True)
class ResultKey:
    audio_sha256: str
    tenant_id: str
    options: dict[str, Any]
    models: dict[str, str]

    def __str__(self) -> str:
        return cache_key(self.audio_sha256, self.models, self.options, self.tenant_id)


def result_key(
    audio_sha256: str,
    tenant_id: str,
    options: ProcessingOptions,
    models: Mapping[str, str | None],
) -> ResultKey:
    """The key of a result: audio, tenant, options and every model role."""
    ids = {role: str(models.get(role) or "none") for role in MODEL_ROLES}
    return ResultKey(audio_sha256, tenant_id, options.stored(), ids)


def key_of(task: Task, models: Mapping[str, str | None]) -> ResultKey | None:
    """The key of a stored task's result (``None`` for a task without audio)."""
    if not task.audio_sha256:
        return None
    options = ProcessingOptions.from_stored(task.options)
    return result_key(task.audio_sha256, task.tenant_id, options, models)


def _call(services: Services, method: str, key: ResultKey, *args: Any) -> Any:
    cache = services.cache
    if cache is None:
        return None
    return getattr(cache, method)(
        key.audio_sha256, key.models, key.options, *args, tenant=key.tenant_id
    )


async def cached_result(services: Services, key: ResultKey | None) -> dict[str, Any] | None:
    if key is None or services.cache is None:
        return None
    return await asyncio.to_thread(_call, services, "get", key)


async def keep_result(services: Services, key: ResultKey | None, payload: dict[str, Any]) -> None:
    if key is not None and services.cache is not None:
        await asyncio.to_thread(_call, services, "set", key, payload)


def drop_result(services: Services, key: ResultKey | None) -> None:
    if key is not None and services.cache is not None:
        _call(services, "delete", key)


__all__ = [
    "MODEL_ROLES",
    "ResultKey",
    "cached_result",
    "drop_result",
    "keep_result",
    "key_of",
    "result_key",
]
