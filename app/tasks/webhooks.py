"""Webhooks signed per the Standard Webhooks spec (https://www.standardwebhooks.com).

Every delivery carries three headers:

- ``webhook-id``: the message id, the same on every retry (receivers dedupe on it);
- ``webhook-timestamp``: Unix seconds of this attempt;
- ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")),
  where ``key`` is the base64-decoded part of the tenant's ``whsec_...`` secret.

:func:`verify` is the receiver side (also what our tests and docs use).
:func:`deliver` POSTs with retries: 5xx, 408, 429, timeouts and connection
errors are retried with exponential backoff (honouring ``Retry-After``); any
other status stops at once (2xx = delivered; 3xx and other 4xx = the receiver
refused, retrying would not help). Webhook URLs are user input, so delivery
goes through the SSRF guard (:mod:`app.net.url_guard`) unless ``guard=False``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from app.net.url_guard import AllowList, URLFetchError, check_url, guarded_client

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 5 * 60
RETRYABLE_STATUS = frozenset({408, 429})


class WebhookVerificationError(Exception):
    """The signature, timestamp or headers of a webhook are wrong."""


# --- secrets and signatures --------------------------------------------------------


def generate_secret(nbytes: int = 24) -> str:
    """A new signing secret: ``whsec_`` + base64 of ``nbytes`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret must be whsec_ followed by base64") from exc


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one message."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + _bytes(body)
    digest = hmac.new(_key(secret), to_sign, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def build_headers(
    secret: str, msg_id: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers plus ``content-type``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a received webhook; raises :class:`WebhookVerificationError` if it is not genuine.

    ``headers`` is looked up case-insensitively. Several space-separated
    signatures are accepted (secret rotation); one valid ``v1`` is enough.
    Timestamps more than ``tolerance_s`` away from ``now`` are refused (replays).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    ts_raw = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not ts_raw or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(ts_raw)
    except ValueError as exc:
        raise WebhookVerificationError("invalid webhook-timestamp") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return
    raise WebhookVerificationError("no matching signature")


def encode_payload(payload: Mapping[str, Any] | bytes | str) -> bytes:
    """Compact JSON bytes (the exact bytes that are signed and sent)."""
    if isinstance(payload, bytes | str):
        return _bytes(payload)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# --- delivery ----------------------------------------------------------------------

#: Most bytes read from a receiver's reply; the rest is never read.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as stored in ``Task.webhook_attempts`` and the outbox row."""

    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    retryable: bool = False
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["ok"] = self.ok
        return data


def delivered(attempts: Iterable[Attempt]) -> bool:
    return any(a.ok for a in attempts)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _client(allow: AllowList | Iterable[str] | None, guard: bool, timeout_s: float):
    if guard:
        return guarded_client(allow, timeout_s=timeout_s)
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False)


def _refusal(url: str, allow: AllowList | Iterable[str] | None, guard: bool) -> str | None:
    try:
        if guard:
            check_url(url, allow)
        elif httpx.URL(url).scheme not in ("http", "https"):
            raise URLFetchError("invalid_url_scheme", "only http and https webhook URLs")
    except URLFetchError as exc:
        return f"{exc.code}: {exc.message}"
    return None


async def _post_once(
    client: httpx.AsyncClient,
    n: int,
    url: str,
    body: bytes,
    secret: str,
    message_id: str,
    *,
    timeout_s: float,
    max_response_bytes: int,
) -> Attempt:
    """One POST under a total deadline, reading at most ``max_response_bytes`` of the reply
    (a receiver cannot hold the sender or stream an unbounded body into it)."""
    started = time.monotonic()
    at = datetime.now(UTC)
    status: int | None = None
    error: str | None = None
    retryable = False
    wait_hint: float | None = None

    async def post() -> None:
        nonlocal status, error, retryable, wait_hint
        request = client.build_request(
            "POST", url, content=body, headers=build_headers(secret, message_id, body)
        )
        response = await client.send(request, stream=True)
        try:
            status = response.status_code
            retryable = status >= 500 or status in RETRYABLE_STATUS
            if not 200 <= status < 300:
                error = f"HTTP {status}"
                wait_hint = _retry_after(response)
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= max_response_bytes:
                    break  # enough: the status is all we need
        finally:
            await response.aclose()

    try:
        await asyncio.wait_for(post(), timeout_s)
    except URLFetchError as exc:
        error = f"{exc.code}: {exc.message}"
    except (httpx.TimeoutException, TimeoutError) as exc:
        if status is None:
            error = f"timeout: {type(exc).__name__}"
            retryable = True
    except httpx.HTTPError as exc:
        if status is None:
            error = f"{type(exc).__name__}: {exc}"
            retryable = True
    return Attempt(
        n,
        at,
        status,
        error,
        round((time.monotonic() - started) * 1000, 1),
        retryable=retryable,
        retry_after_s=wait_hint,
    )


async def send_once(
    url: str,
    payload: Mapping[str, Any] | bytes | str,
    secret: str,
    *,
    msg_id: str,
    attempt: int = 1,
    timeout_s: float = 10.0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    allow: AllowList | Iterable[str] | None = None,
    guard: bool = True,
) -> Attempt:
    """One signed delivery attempt (the durable outbox calls this and keeps the retries)."""
    _key(secret)
    body = encode_payload(payload)
    refused = _refusal(url, allow, guard)
    if refused is not None:
        return Attempt(attempt, datetime.now(UTC), None, refused, 0.0)
    async with _client(allow, guard, timeout_s) as client:
        return await _post_once(
            client,
            attempt,
            url,
            body,
            secret,
            msg_id,
            timeout_s=timeout_s,
            max_response_bytes=max_response_bytes,
        )


async def deliver(
    url: str,
    payload: Mapping[str, Any] | bytes | str,
    secret: str,
    *,
    max_attempts: int = 5,
    backoff_s: float = 1.0,
    backoff_max_s: float = 60.0,
    timeout_s: float = 10.0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    msg_id: str | None = None,
    allow: AllowList | Iterable[str] | None = None,
    guard: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Attempt]:
    """POST ``payload`` to ``url`` signed with ``secret``, retrying in memory; returns
    every attempt made.

    The last attempt is ``ok`` iff the webhook was delivered. Never raises for
    delivery problems (they are in the attempts); raises ``ValueError`` for a
    malformed secret. Backoff before attempt n+1: ``backoff_s * 2**(n-1)``,
    capped at ``backoff_max_s``, or the receiver's ``Retry-After`` if longer.
    Each attempt has a total deadline of ``timeout_s`` and reads at most
    ``max_response_bytes`` of the reply. Tasks use the durable outbox
    (:mod:`app.tasks.outbox`) instead, which survives restarts.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    _key(secret)  # fail fast on a bad secret
    body = encode_payload(payload)
    message_id = msg_id or f"msg_{uuid.uuid4().hex}"
    refused = _refusal(url, allow, guard)
    if refused is not None:
        return [Attempt(1, datetime.now(UTC), None, refused, 0.0)]
    attempts: list[Attempt] = []
    async with _client(allow, guard, timeout_s) as client:
        for n in range(1, max_attempts + 1):
            result = await _post_once(
                client,
                n,
                url,
                body,
                secret,
                message_id,
                timeout_s=timeout_s,
                max_response_bytes=max_response_bytes,
            )
            attempts.append(result)
            if result.ok or not result.retryable or n == max_attempts:
                break
            delay = min(backoff_s * 2 ** (n - 1), backoff_max_s)
            if result.retry_after_s is not None:
                delay = min(max(delay, result.retry_after_s), backoff_max_s)
            await sleep(delay)
    return attempts


__all__ = [
    "MAX_RESPONSE_BYTES",
    "SECRET_PREFIX",
    "Attempt",
    "WebhookVerificationError",
    "build_headers",
    "deliver",
    "delivered",
    "encode_payload",
    "generate_secret",
    "send_once",
    "sign",
    "verify",
]
