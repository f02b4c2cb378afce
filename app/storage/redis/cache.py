"""Result cache: the same audio, models and options give the same result.

The key is ``aipp:cache:v1:<audio sha256>:<hash of tenant + models + options>``,
so a model upgrade or a different summary prompt is a different entry, and one
tenant's upload never tells another (``cached: true``) that the same audio was
processed before. Values are
JSON objects with a TTL. A Redis outage is a miss (``get``) or a no-op (``set``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import redis

from app.storage.redis import as_str
from app.storage.redis.degrade import Guard

DEFAULT_TTL_S = 7 * 24 * 3600
KEY_PREFIX = "aipp:cache:v1:"


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, no spaces) so equal options hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(
    audio_sha256: str,
    models: Mapping[str, str],
    options: Mapping[str, Any],
    tenant: str | None = None,
) -> str:
    """Key for a result of ``audio_sha256`` under ``models`` (e.g. ``{"stt": .., "llm": ..}``)
    and the task ``options`` that change the output (language, summary prompt, ...),
    scoped to ``tenant`` (the service always passes it)."""
    if len(audio_sha256) != 64 or any(c not in "0123456789abcdef" for c in audio_sha256):
        raise ValueError("audio_sha256 must be 64 lowercase hex characters")
    scope: dict[str, Any] = {"models": dict(models), "options": dict(options)}
    if tenant is not None:
        scope["tenant"] = tenant
    digest = hashlib.sha256(canonical_json(scope).encode()).hexdigest()
    return f"{KEY_PREFIX}{audio_sha256}:{digest[:32]}"


class ResultCache:
    """JSON results in Redis with a TTL; fails open (miss) when Redis is down."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        guard: Guard | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.client = client
        self.ttl_s = ttl_s
        self.guard = guard or Guard("cache")

    def get(
        self,
        audio_sha256: str,
        models: Mapping[str, str],
        options: Mapping[str, Any],
        *,
        tenant: str | None = None,
    ) -> dict[str, Any] | None:
        """The cached result, or ``None`` on a miss, a corrupt entry or an outage."""
        key = cache_key(audio_sha256, models, options, tenant)
        raw = self.guard.call(lambda: self.client.get(key), lambda: None)
        if raw is None:
            return None
        try:
            value = json.loads(as_str(raw) or "")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def set(
        self,
        audio_sha256: str,
        models: Mapping[str, str],
        options: Mapping[str, Any],
        result: Mapping[str, Any],
        *,
        ttl_s: int | None = None,
        tenant: str | None = None,
    ) -> bool:
        """Store ``result``; ``True`` if it was written, ``False`` when Redis is down."""
        key = cache_key(audio_sha256, models, options, tenant)
        payload = canonical_json(dict(result))
        ttl = ttl_s or self.ttl_s
        return bool(self.guard.call(lambda: self.client.set(key, payload, ex=ttl), lambda: False))

    def delete(
        self,
        audio_sha256: str,
        models: Mapping[str, str],
        options: Mapping[str, Any],
        *,
        tenant: str | None = None,
    ) -> bool:
        key = cache_key(audio_sha256, models, options, tenant)
        return bool(self.guard.call(lambda: self.client.delete(key), lambda: 0))


__all__ = ["DEFAULT_TTL_S", "ResultCache", "cache_key", "canonical_json"]
