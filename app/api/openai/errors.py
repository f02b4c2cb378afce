"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, for these routes only.

SDKs raise their usual exceptions from it: invalid parameters (pydantic validation
included) are 400 (``BadRequestError``), an unknown model 404 (``NotFoundError``),
audio that cannot be processed keeps the project's 413/422, and 401/429 from auth and
rate limiting keep their codes. :class:`OpenAIRoute` converts around the whole route
handler, dependencies included, and tells ``app/api/guard.py`` how to shape the errors
it answers before the route runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.errors import DOMAIN_ERRORS, APIError, to_api_error
from app.core import metrics
from app.core.logs import get_logger
from app.tasks.pipeline import unwrap

log = get_logger()


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,  # noqa: A002 - OpenAI's field name
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type or error_type(status_code)
        self.headers = headers or {}


def error_type(status_code: int) -> str:
    if status_code == 429:
        return "requests"
    if status_code == 403:
        return "permission_error"
    if status_code >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error_body(
    message: str,
    type: str,  # noqa: A002
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _loc(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or None


def from_validation(errors: list[dict[str, Any]]) -> OpenAIError:
    """A 400 naming the first bad parameter (FastAPI's or our own pydantic models')."""
    if not errors:
        return OpenAIError(400, "Invalid request.", code="invalid_request")
    first = errors[0]
    param = _loc(first.get("loc", ()))
    if first.get("type") == "missing":
        return OpenAIError(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if first.get("type") == "json_invalid":
        return OpenAIError(400, "The request body is not valid JSON.", code="invalid_json")
    messages = []
    for err in errors[:5]:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        messages.append(f"Invalid value for '{_loc(err.get('loc', ()))}': {msg}.")
    return OpenAIError(400, " ".join(messages), param=param, code="invalid_value")


def to_openai_error(exc: BaseException) -> OpenAIError | None:
    """The OpenAI-shaped equivalent of an exception a route can raise; None if unknown."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, APIError):
        param = exc.extra.get("param") or exc.extra.get("field")
        return OpenAIError(
            exc.status_code, exc.message, param=param, code=exc.code, headers=exc.headers
        )
    if isinstance(exc, DOMAIN_ERRORS):
        err = to_api_error(exc)  # type: ignore[arg-type]
        param = "file" if err.code not in ("url_not_allowed", "invalid_url_scheme") else None
        return OpenAIError(err.status_code, err.message, param=param, code=err.code)
    if isinstance(exc, RequestValidationError | ValidationError):
        return from_validation(list(exc.errors()))
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return OpenAIError(
            exc.status_code, str(exc.detail), code=code, headers=getattr(exc, "headers", None)
        )
    try:
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
    except ImportError:  # pragma: no cover
        return None
    cause = unwrap(exc)
    if cause is not exc:
        return to_openai_error(cause)
    if isinstance(cause, BackPressureError):
        return OpenAIError(
            503,
            "The service is overloaded; retry shortly.",
            code="overloaded",
            headers={"Retry-After": "10"},
        )
    if isinstance(cause, DeploymentUnavailableError):
        return OpenAIError(
            503,
            "The model is not available right now.",
            code="model_unavailable",
            headers={"Retry-After": "10"},
        )
    return None


def openai_error_response(exc: BaseException) -> JSONResponse:
    """A JSONResponse in OpenAI's error shape for any exception (unknown ones are 500)."""
    err = to_openai_error(exc)
    if err is None:
        log.exception("unhandled error on an OpenAI-compatible route", exc_info=exc)
        err = OpenAIError(
            500, f"Internal server error: {type(exc).__name__}.", code="internal_error"
        )
    return JSONResponse(
        openai_error_body(err.message, err.type, err.param, err.code),
        status_code=err.status_code,
        headers=err.headers or None,
    )


class OpenAIRoute(APIRoute):
    """Answers every error raised while handling the route in OpenAI's shape.

    Wraps FastAPI's whole request handler: body parsing, validation, dependencies
    and the endpoint. Also counts requests by endpoint (``openai_endpoint``) and status.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        endpoint = (self.openapi_extra or {}).get("x-aipp-endpoint", "models")

        async def openai_route_handler(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:
                response = openai_error_response(exc)
            metrics.record_openai_request(endpoint, response.status_code, time.perf_counter() - t0)
            return response

        return openai_route_handler

    @staticmethod
    def render_guard_error(err: APIError) -> tuple[int, dict[str, str], bytes]:
        """How ``app/api/guard.py`` answers for these routes (401, 413, ... before the body)."""
        oai = to_openai_error(err)
        assert oai is not None
        body = openai_error_body(oai.message, oai.type, oai.param, oai.code)
        return oai.status_code, oai.headers, json.dumps(body).encode()


def not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


__all__ = [
    "OpenAIError",
    "OpenAIRoute",
    "error_type",
    "from_validation",
    "not_found",
    "openai_error_body",
    "openai_error_response",
    "to_openai_error",
]
