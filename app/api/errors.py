"""One error shape for the whole API, and the one place errors become HTTP statuses.

Raising :class:`APIError` anywhere in a route gives a clean 4xx/5xx as
``{"error": {"code", "message"}}``; request validation errors become 422 with the
offending field named in the message.

Lower layers raise domain errors that carry a ``code`` and no status
(:class:`~app.speech.audio.AudioError`, :class:`~app.net.url_guard.URLFetchError`);
:data:`STATUS_BY_CODE` is the table that maps them, used by the exception handlers
here, by the OpenAI layer and by the synchronous route for a failed task's code.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.net.url_guard import URLFetchError
from app.speech.audio import AudioError

#: Domain error code -> HTTP status. Codes not listed: 422 for bad input, else 500.
STATUS_BY_CODE: dict[str, int] = {
    # app.speech.audio
    "empty_file": 422,
    "unsupported_media": 422,
    "audio_decode_failed": 422,
    "audio_truncated": 422,
    "audio_too_long": 413,
    # app.net.url_guard
    "invalid_url_scheme": 422,
    "url_not_allowed": 422,
    "url_not_found": 422,
    "url_too_large": 413,
    "url_timeout": 504,
    "url_fetch_failed": 502,
    # task failures reported by the synchronous route
    "transient_error": 503,
    "worker_lost": 503,
    "internal_error": 500,
}

#: The domain errors a route may let escape; each has ``code`` and ``message``.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (AudioError, URLFetchError)


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


def status_for(code: str, default: int = 422) -> int:
    """The HTTP status for a domain error code (see :data:`STATUS_BY_CODE`)."""
    return STATUS_BY_CODE.get(code, default)


def to_api_error(exc: AudioError | URLFetchError) -> APIError:
    """The API answer for a domain error."""
    default = 502 if isinstance(exc, URLFetchError) else 422
    return APIError(status_for(exc.code, default), exc.code, exc.message)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "request"


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    field = _field_path(first.get("loc", ()))
    msgs = [f"{_field_path(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    return "; ".join(msgs), field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.extra),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
        err = to_api_error(exc)  # type: ignore[arg-type]
        return JSONResponse(error_body(err.code, err.message), status_code=err.status_code)

    for cls in DOMAIN_ERRORS:
        app.add_exception_handler(cls, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = validation_message(exc)
        extra = {"field": field} if field else {}
        return JSONResponse(error_body("invalid_request", message, **extra), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
