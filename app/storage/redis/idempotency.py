"""``Idempotency-Key`` handling (IETF draft-ietf-httpapi-idempotency-key-header, Stripe semantics).

A client may send ``Idempotency-Key: <1..255 printable ASCII>`` with a POST.
The route computes a *fingerprint* of the request (method, path, audio hash,
options) and asks :meth:`IdempotencyStore.begin`, which decides atomically (one
Lua script, so two concurrent requests cannot both win):

=============  =================================================  ======================
outcome        meaning                                            the route answers
=============  =================================================  ======================
``new``        first use of the key: this request owns it         process, then
                                                                  :meth:`~IdempotencyStore.complete`
                                                                  (or ``abandon`` on error)
``replay``     same key + same fingerprint, already completed     the stored task (``task_id``)
``mismatch``   same key, different request                        422
``in_flight``  same key + same fingerprint, still being handled   409 (retry later)
=============  =================================================  ======================

Keys live 24 hours after completion (:data:`DEFAULT_TTL_S`). A key in flight
expires after ``processing_ttl_s`` if its owner died without ``complete`` or
``abandon``, so a crash does not block the key for a day.

When Redis is unavailable, ``begin`` answers ``new`` with ``degraded=True``
(fail open: accept the request, maybe twice) and ``complete``/``abandon`` do
nothing. :meth:`app.storage.sql.tasks.TaskStore.find_by_idempotency_key` is the durable
second line the route can consult in that case.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from enum import StrEnum

import redis

from app.storage.redis import as_str
from app.storage.redis.degrade import Guard

DEFAULT_TTL_S = 24 * 3600
DEFAULT_PROCESSING_TTL_S = 120
KEY_PREFIX = "aipp:idem:v1:"
MAX_KEY_LENGTH = 255


class MalformedIdempotencyKey(ValueError):
    """The header value is not 1..255 printable ASCII characters (answer 400)."""

    code = "invalid_idempotency_key"


class Outcome(StrEnum):
    NEW = "new"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class BeginResult:
    outcome: Outcome
    #: For ``replay``: the task created by the first request.
    task_id: str | None = None
    #: For ``new``: pass to ``complete``/``abandon`` so only the owner finishes the key.
    token: str | None = None
    #: True when Redis was unavailable and the key was not checked at all.
    degraded: bool = False


def validate_key(key: str | None) -> str:
    """Return ``key`` if it is 1..255 printable ASCII characters, else raise."""
    if key is None or not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise MalformedIdempotencyKey("Idempotency-Key must be 1 to 255 characters")
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in key) or not key.strip():
        raise MalformedIdempotencyKey("Idempotency-Key must be printable ASCII")
    return key


def fingerprint(*parts: str | bytes | None) -> str:
    """SHA-256 over the parts (length-prefixed, so ``("ab","c") != ("a","bc")``)."""
    h = hashlib.sha256()
    for part in parts:
        data = b"\x00null" if part is None else part if isinstance(part, bytes) else part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'processing', 'fp', ARGV[1], 'token', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new', ''}
end
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return {'mismatch', ''}
end
if state == 'done' then
  return {'replay', redis.call('HGET', KEYS[1], 'task_id') or ''}
end
return {'in_flight', ''}
"""

_COMPLETE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'processing' then return 0 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'task_id', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_ABANDON = """
if redis.call('HGET', KEYS[1], 'state') ~= 'processing' then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class IdempotencyStore:
    """Idempotency keys per tenant in Redis (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        processing_ttl_s: int = DEFAULT_PROCESSING_TTL_S,
        guard: Guard | None = None,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.processing_ttl_s = processing_ttl_s
        self.guard = guard or Guard("idempotency")
        # register_script uses EVALSHA and reloads the script after NOSCRIPT
        # (e.g. a restarted Redis).
        self._begin = client.register_script(_BEGIN)
        self._complete = client.register_script(_COMPLETE)
        self._abandon = client.register_script(_ABANDON)

    @staticmethod
    def redis_key(tenant: str, key: str) -> str:
        digest = hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()
        return KEY_PREFIX + digest

    def begin(self, tenant: str, key: str, request_fingerprint: str) -> BeginResult:
        """Claim ``key`` for this request or say why not; raises ``MalformedIdempotencyKey``."""
        validate_key(key)
        token = uuid.uuid4().hex
        rkey = self.redis_key(tenant, key)

        def run() -> BeginResult:
            outcome, task_id = self._begin(
                keys=[rkey], args=[request_fingerprint, self.processing_ttl_s * 1000, token]
            )
            result = Outcome(as_str(outcome))
            return BeginResult(
                outcome=result,
                task_id=as_str(task_id) or None,
                token=token if result is Outcome.NEW else None,
            )

        return self.guard.call(run, lambda: BeginResult(Outcome.NEW, degraded=True))

    def complete(self, tenant: str, key: str, task_id: str, *, token: str | None = None) -> bool:
        """Record that ``key`` produced ``task_id``; later ``begin`` calls replay it.

        Returns ``False`` if the key is not in flight (expired, abandoned, or
        owned by another ``token``) or Redis is down.
        """
        rkey = self.redis_key(tenant, key)
        return bool(
            self.guard.call(
                lambda: self._complete(keys=[rkey], args=[task_id, self.ttl_s * 1000, token or ""]),
                lambda: 0,
            )
        )

    def abandon(self, tenant: str, key: str, *, token: str | None = None) -> bool:
        """Release an in-flight key after a failure so the client can retry at once."""
        rkey = self.redis_key(tenant, key)
        return bool(
            self.guard.call(lambda: self._abandon(keys=[rkey], args=[token or ""]), lambda: 0)
        )


__all__ = [
    "DEFAULT_PROCESSING_TTL_S",
    "DEFAULT_TTL_S",
    "BeginResult",
    "IdempotencyStore",
    "MalformedIdempotencyKey",
    "Outcome",
    "fingerprint",
    "validate_key",
]
