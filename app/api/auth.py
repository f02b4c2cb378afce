"""API-key authentication for FastAPI routes.

    authenticator = Authenticator(Tenants(engine), settings)
    @app.post("/v1/tasks")
    def create(principal: Principal = Depends(authenticator)): ...

Auth is required when ``AIPP_AUTH=on``, or ``auto`` (the default) and the
service is reachable beyond loopback: judged from the addresses it really binds
(``AIPP_HOST`` and the Serve HTTP proxy's own ``http_options.host``, which the
cluster manifests set to 0.0.0.0; :func:`auth_required`), and per request from the
local address the connection arrived on (:func:`arrived_beyond_loopback`, applied
by ``app/api/guard.py``). Then a request needs
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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Header

from app.api.errors import APIError
from app.core.settings import Settings
from app.tasks.door import Tenants

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


def serve_bind_host() -> str | None:
    """The host the Ray Serve HTTP proxies bind (``http_options.host``); None outside Serve."""
    try:
        from ray import serve
        from ray.serve.context import _get_global_client

        if not serve.context._get_internal_replica_context():
            return None
        return str(_get_global_client().http_config.host)
    except Exception:  # not in a Serve replica, or the controller is unreachable
        return None


def auth_required(settings: Settings, bind_hosts: Iterable[str | None] = ()) -> bool:
    """Whether keys are required: ``on``; or ``auto`` and any bind address is not loopback.

    ``bind_hosts`` are the addresses the service really listens on besides
    ``settings.host`` (e.g. :func:`serve_bind_host`): a manifest that binds the proxy
    to 0.0.0.0 turns keys on even if ``AIPP_HOST`` was left at its default.
    """
    if settings.auth == "on":
        return True
    if settings.auth == "off":
        return False
    hosts = [settings.host, *(h for h in bind_hosts if h)]
    return not all(is_loopback_host(h) for h in hosts)


def arrived_beyond_loopback(scope: dict[str, Any]) -> bool:
    """True when the ASGI ``server`` address (the local end of the connection) is not loopback."""
    server = scope.get("server")
    if not server:
        return False  # a unix socket: only local processes can connect
    return not is_loopback_host(str(server[0]))


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
        self, tenants: Tenants, settings: Settings | None = None, *, required: bool | None = None
    ) -> None:
        if required is None:
            if settings is None:
                raise ValueError("pass settings or required")
            required = auth_required(settings, [serve_bind_host()])
        self.tenants = tenants
        self.required = required
        self._local: Principal | None = None
        self._lock = threading.Lock()

    def local_principal(self) -> Principal:
        """The ``local`` tenant used when auth is off (created on first use)."""
        if self._local is None:
            with self._lock:
                if self._local is None:
                    tenant = self.tenants.ensure(LOCAL_TENANT)
                    self._local = Principal(tenant.id, tenant.name, None)
        return self._local

    def authenticate(self, authorization: str | None, *, required: bool | None = None) -> Principal:
        """Raise :class:`~app.api.errors.APIError` 401 or return the caller.

        ``required=True`` demands a key even where this replica's default is off
        (a request that arrived on a non-loopback address).
        """
        if not (self.required if required is None else required):
            return self.local_principal()
        if not authorization:
            raise _unauthorized(
                "missing_api_key", "an API key is required: send Authorization: Bearer <key>"
            )
        token = parse_bearer(authorization)
        found = self.tenants.authenticate_key(token) if token else None
        if found is None:
            raise _unauthorized(
                "invalid_api_key", "the API key is invalid or revoked", "invalid_token"
            )
        tenant, key = found
        return Principal(tenant.id, tenant.name, key.id)

    def __call__(self, authorization: str | None = Header(default=None)) -> Principal:
        return self.authenticate(authorization)


__all__ = [
    "LOCAL_TENANT",
    "Authenticator",
    "Principal",
    "arrived_beyond_loopback",
    "auth_required",
    "is_loopback_host",
    "serve_bind_host",
    "parse_bearer",
]
