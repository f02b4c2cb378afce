"""API-key authentication for FastAPI routes.

    authenticator = Authenticator(engine, settings)
    @app.post("/v1/tasks")
    def create(principal: Principal = Depends(authenticator)): ...

Auth is required when ``AIPP_AUTH=on``, or ``auto`` (the default) and the
server binds beyond loopback (:func:`auth_required`). Then a request needs
``Authorization: Bearer aipp_...``; a missing key is 401 ``missing_api_key``,
an unknown or revoked one 401 ``invalid_api_key``, both with
``WWW-Authenticate: Bearer`` (RFC 6750).

When auth is off, every request acts as the tenant ``local`` and the
``Authorization`` header is ignored: local tools (OpenAI SDKs among them)
often send a placeholder key, which must not turn into a 401.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

from fastapi import Header
from sqlalchemy.engine import Engine

from app.storage.sql import keys
from app.api.errors import APIError
from app.core.settings import Settings

LOCAL_TENANT = "local"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, and the key used (``None`` when auth is off)."""

    tenant_id: str
    tenant_name: str
    key_id: str | None = None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``; ``0.0.0.0``/``::`` are not loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    if settings.auth == "on":
        return True
    if settings.auth == "off":
        return False
    return not is_loopback_host(settings.host)


def parse_bearer(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; ``None`` if absent or another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _unauthorized(code: str, message: str, error: str | None = None) -> APIError:
    challenge = 'Bearer realm="aipp"' + (f', error="{error}"' if error else "")
    return APIError(401, code, message, headers={"WWW-Authenticate": challenge})


class Authenticator:
    """Resolves a request's ``Authorization`` header to a :class:`Principal`.

    An instance is a FastAPI dependency (a plain ``def``: FastAPI runs it in
    its thread pool, so the database lookup does not block the event loop).
    """

    def __init__(
        self, engine: Engine, settings: Settings | None = None, *, required: bool | None = None
    ) -> None:
        if required is None:
            if settings is None:
                raise ValueError("pass settings or required")
            required = auth_required(settings)
        self.engine = engine
        self.required = required
        self._local: Principal | None = None
        self._lock = threading.Lock()

    def local_principal(self) -> Principal:
        """The ``local`` tenant used when auth is off (created on first use)."""
        if self._local is None:
            with self._lock:
                if self._local is None:
                    tenant = keys.ensure_tenant(self.engine, LOCAL_TENANT)
                    self._local = Principal(tenant.id, tenant.name, None)
        return self._local

    def authenticate(self, authorization: str | None) -> Principal:
        """Raise :class:`~app.api.errors.APIError` 401 or return the caller."""
        if not self.required:
            return self.local_principal()
        if not authorization:
            raise _unauthorized(
                "missing_api_key", "an API key is required: send Authorization: Bearer <key>"
            )
        token = parse_bearer(authorization)
        found = keys.authenticate_key(self.engine, token) if token else None
        if found is None:
            raise _unauthorized(
                "invalid_api_key", "the API key is invalid or revoked", "invalid_token"
            )
        tenant, key = found
        return Principal(tenant.id, tenant.name, key.id)

    def __call__(self, authorization: str | None = Header(default=None)) -> Principal:
        return self.authenticate(authorization)


def make_auth_dependency(engine: Engine, settings: Settings) -> Authenticator:
    """Shorthand for ``Authenticator(engine, settings)``."""
    return Authenticator(engine, settings)


__all__ = [
    "LOCAL_TENANT",
    "Authenticator",
    "Principal",
    "auth_required",
    "is_loopback_host",
    "make_auth_dependency",
    "parse_bearer",
]
