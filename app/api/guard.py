"""ASGI middleware that refuses hostile requests before any route reads a body.

Order, cheapest first, each answered at once with the route's own error shape:

1. **Host** (only while keys are off): the ``Host`` header must be a loopback name,
   an IP literal or one of ``AIPP_TRUSTED_HOSTS``. A DNS-rebinding page reaches the
   service under *its* domain name, so it is refused (400 ``untrusted_host``).
2. **Cross-site** (only while keys are off): a state-changing browser request from
   another site (``Sec-Fetch-Site: cross-site|same-site``, or an ``Origin`` that is
   not this origin, scheme, host and port alike, nor a trusted host) is 403
   ``cross_site_request``: any web page can POST a multipart form to 127.0.0.1
   without a CORS preflight, including one served from another port of 127.0.0.1.
3. **Unstorable URL**: a NUL or other control character in the path, or a NUL in a
   query parameter, is 400 ``invalid_request`` naming it (PostgreSQL cannot hold NUL:
   it used to be a 500 wherever a path parameter reached a query).
4. **Size**: a declared ``Content-Length`` over the limit is 413 before one byte of
   the body is read; a chunked body is counted while it streams and stopped at the
   limit (413), whatever the route does with it.
5. **Key**: routes that need the caller (they depend on ``app.api.deps.principal``)
   are authenticated here, from the headers, before FastAPI parses a form or JSON
   body; the principal is left in ``request.state.principal`` for the route.

With keys on (``AIPP_AUTH=on``, or ``auto`` and a non-loopback bind), 1 and 2 are
moot: a browser page holds no key. In ``auto`` mode a request that arrives on a
non-loopback local address needs a key even if the bind settings said loopback.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import Authenticator, arrived_beyond_loopback, is_loopback_host
from app.api.errors import APIError, error_body

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
#: A Content-Length: ASCII digits only (``str.isdigit`` also takes "²"), and few enough
#: of them for ``int()``; more than 18 digits is over any limit anyway.
_LENGTH = re.compile(r"[0-9]{1,18}", re.ASCII)
_PATH_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
#: Room for multipart boundaries and form fields on top of the file itself.
BODY_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard enforces; built from settings by :func:`policy_from`."""

    max_body_bytes: int
    auth_required: bool
    auth_auto: bool = True
    trusted_hosts: tuple[str, ...] = field(default_factory=tuple)

    def host_trusted(self, host: str) -> bool:
        """Loopback names, IP literals (never a rebinding target) and configured names."""
        name = host.strip().strip("[]").rstrip(".").lower()
        if not name or is_loopback_host(name):
            return bool(name)
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        return any(_host_matches(name, pattern) for pattern in self.trusted_hosts)


def _host_matches(name: str, pattern: str) -> bool:
    pattern = pattern.strip().lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def policy_from(settings: Any, auth_required: bool) -> GuardPolicy:
    """The policy for these settings (``AIPP_MAX_UPLOAD_MB``, ``AIPP_TRUSTED_HOSTS``)."""
    return GuardPolicy(
        max_body_bytes=int(settings.max_upload_mb * 1024 * 1024) + BODY_SLACK_BYTES,
        auth_required=auth_required,
        auth_auto=settings.auth == "auto",
        trusted_hosts=tuple(getattr(settings, "trusted_hosts", ()) or ()),
    )


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


def split_host(value: str) -> str:
    """``host[:port]`` -> host (IPv6 literals keep their brackets off)."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_port(value: str, scheme: str) -> tuple[str, int | None]:
    """``host[:port]`` -> (lower-case host, port); the scheme's default port when none is
    given, ``None`` when the port is not a number."""
    host = split_host(value).rstrip(".").lower()
    rest = value.strip()
    rest = rest[rest.find("]") + 1 :] if rest.startswith("[") else rest
    if rest.count(":") != 1:
        return host, DEFAULT_PORTS.get(scheme)
    port = rest.rsplit(":", 1)[1]
    if not port:
        return host, DEFAULT_PORTS.get(scheme)
    return host, int(port) if _LENGTH.fullmatch(port) and int(port) < 65536 else None


def origin_of(value: str) -> tuple[str, str, int | None] | None:
    """An ``Origin`` header as (scheme, host, port), or ``None`` when it is not one."""
    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme]


def unstorable_field(scope: Scope) -> str | None:
    """The part of the URL no database can hold (see the module's step 3), or ``None``."""
    if _PATH_CONTROLS.search(scope.get("path", "")):
        return "path"
    query = scope.get("query_string", b"")
    if not query:
        return None
    text = query.decode("latin-1")
    if "\x00" in text or "%00" in text:
        for name, value in parse_qsl(text, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "")[:100] or "query"
    return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def project_error(err: APIError) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(error_body(err.code, err.message, **err.extra)).encode()
    return err.status_code, err.headers, body


ErrorRenderer = Callable[[APIError], tuple[int, dict[str, str], bytes]]


class HTTPGuard:
    """The middleware (pure ASGI, so it runs before Starlette builds a Request).

    ``router`` is the app's router: the guard finds the route a request is for, to
    know whether it needs a key (it depends on ``needs_caller``) and how its errors
    look (a route class may define ``render_guard_error(APIError)``, as the
    OpenAI-compatible routes do).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: GuardPolicy,
        authenticator: Authenticator | None,
        router: Router,
        needs_caller: Callable[[Any], bool],
    ) -> None:
        self.app = app
        self.policy = policy
        self.authenticator = authenticator
        self.router = router
        self.needs_caller = needs_caller
        self._route_flags: dict[int, tuple[Any, bool]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        render = render_for(route)
        try:
            receive = await self._check(scope, receive, route)
        except APIError as err:
            await _respond(send, *render(err))
            return
        await self._forward(scope, receive, send, render)

    async def _check(self, scope: Scope, receive: Receive, route: Any) -> Receive:
        headers = _headers(scope)
        policy = self.policy
        required = policy.auth_required or (policy.auth_auto and arrived_beyond_loopback(scope))
        if not required:
            host = split_host(headers.get("host", ""))
            if not policy.host_trusted(host):
                raise APIError(
                    400,
                    "untrusted_host",
                    f"the Host {host!r} is not served here; add it to AIPP_TRUSTED_HOSTS "
                    "or turn API keys on",
                )
            if scope.get("method", "GET").upper() not in SAFE_METHODS:
                self._check_same_site(headers, scope.get("scheme", "http"))
        bad = unstorable_field(scope)
        if bad is not None:
            raise APIError(
                400,
                "invalid_request",
                f"{bad}: must not contain NUL or control characters",
                extra={"field": bad},
            )
        length = headers.get("content-length")
        if length is not None:
            length = length.strip()
            if not length.isascii() or not length.isdigit():
                raise APIError(400, "invalid_content_length", "Content-Length is not a number")
            if not _LENGTH.fullmatch(length) or int(length) > policy.max_body_bytes:
                raise self._too_large(headers)
        if route is not None and self.authenticator is not None and self._needs_key(route):
            authorization = headers.get("authorization")
            principal = await anyio.to_thread.run_sync(
                lambda: self.authenticator.authenticate(authorization, required=required)
            )
            scope.setdefault("state", {})["principal"] = principal
        return receive

    def _check_same_site(self, headers: dict[str, str], scheme: str) -> None:
        """Refuse a browser request from another origin: scheme, host and port all count
        (a page on another port of 127.0.0.1 is another origin)."""
        site = headers.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            raise _cross_site(f"Sec-Fetch-Site: {site}")
        if site in ("same-origin", "none"):
            return
        origin = headers.get("origin")
        if origin is None:
            return  # not a browser (curl, SDKs), or a same-origin request of an old one
        parsed = origin_of(origin) if origin != "null" else None
        if parsed is None:
            raise _cross_site(f"Origin: {origin[:200]}")
        o_scheme, o_host, o_port = parsed
        host, port = host_port(headers.get("host", ""), scheme)
        if (o_scheme, o_host, o_port) == (scheme, host, port) and port is not None:
            return
        # A trusted name (exact, never loopback) is how the service is published, often
        # behind a proxy that rewrites Host and ends TLS: its origin on the scheme's own
        # port, or on the port this request came to, is this service.
        trusted = {h.strip().lower().rstrip(".") for h in self.policy.trusted_hosts}
        if (
            o_host in trusted
            and not is_loopback_host(o_host)
            and o_port in (DEFAULT_PORTS[o_scheme], port)
        ):
            return
        raise _cross_site(f"Origin: {origin[:200]}")

    def _too_large(self, headers: dict[str, str]) -> APIError:
        limit_mib = (self.policy.max_body_bytes - BODY_SLACK_BYTES) / (1024 * 1024)
        multipart = headers.get("content-type", "").startswith("multipart/")
        what = "upload" if multipart else "request body"
        return APIError(
            413,
            "file_too_large" if multipart else "request_too_large",
            f"the {what} is larger than the limit of {limit_mib:g} MiB",
        )

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, render: ErrorRenderer
    ) -> None:
        """Run the app with a byte-counting ``receive``; swap its answer for 413 when over."""
        limit = self.policy.max_body_bytes
        seen = 0
        over: APIError | None = None
        started = False

        async def counted_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = self._too_large(_headers(scope))
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over is not None:
                # The app answered (FastAPI turns a failed body read into 400): say why.
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _respond(send, *render(over))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            if not started and over is not None:
                await _respond(send, *render(over))
                return
            raise
        except Exception:
            if over is not None and not started:
                await _respond(send, *render(over))
                return
            raise

    def _route(self, scope: Scope) -> Any:
        return find_route(self.router.routes, scope)

    def _needs_key(self, route: Any) -> bool:
        cached = self._route_flags.get(id(route))
        if cached is None or cached[0] is not route:
            # Keep the route in the entry so its id cannot be reused by another object.
            cached = self._route_flags[id(route)] = (route, self.needs_caller(route))
        return cached[1]


def find_route(routes: list[Any], scope: Scope) -> Any:
    r"""The route that fully matches ``scope``, descending into included routers.

    FastAPI (>= 0.16x) keeps an included router as one ``_IncludedRouter`` whose
    ``effective_candidates()`` are the routes with the include's prefix and
    dependencies applied (``.dependant``, ``.original_route``); older versions
    flatten them into plain ``APIRoute``\ s. Both are handled.
    """
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            found = find_route(candidates(), scope)
            if found is not None:
                return found
            continue
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


def render_for(route: Any) -> ErrorRenderer:
    """The route's own error shape for guard refusals (``render_guard_error``), else ours."""
    for candidate in (route, getattr(route, "original_route", None)):
        render = getattr(candidate, "render_guard_error", None)
        if render is not None:
            return render
    return project_error


def _cross_site(why: str) -> APIError:
    return APIError(
        403,
        "cross_site_request",
        f"refusing a cross-site browser request ({why}); use an API key or the same origin",
    )


async def _respond(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    # The body was not (fully) read: close the connection rather than drain it.
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def depends_on(route: Any, target: Callable[..., Any]) -> bool:
    """True if the FastAPI route's dependency tree calls ``target``."""
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        dep = stack.pop()
        if dep.call is target:
            return True
        stack.extend(dep.dependencies)
    return False


__all__ = [
    "BODY_SLACK_BYTES",
    "GuardPolicy",
    "HTTPGuard",
    "depends_on",
    "host_port",
    "origin_of",
    "policy_from",
    "split_host",
    "unstorable_field",
]
