"""The per-key rate limit (token bucket in Redis) for routes that submit work; 429 when over.

One place for the three route files that submit work (tasks, summarize, OpenAI).
"""

from __future__ import annotations

from fastapi import Response

from app.api.auth import Principal
from app.api.errors import APIError
from app.core import metrics
from app.tasks.door import TaskDoor


def rate_limit(door: TaskDoor, principal: Principal, response: Response | None) -> None:
    """Take one token for the caller's key; 429 with ``Retry-After`` when the bucket is empty."""
    decision = door.allow_submission(principal.key_id or f"tenant:{principal.tenant_id}")
    if decision is None:
        return
    headers = decision.headers()
    if not decision.allowed:
        metrics.record_rate_limited()
        raise APIError(
            429,
            "rate_limited",
            f"too many submissions; retry in {headers.get('Retry-After', '1')} s",
            headers=headers,
        )
    if response is not None:
        response.headers.update(headers)


__all__ = ["rate_limit"]
