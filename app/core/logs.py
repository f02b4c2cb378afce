"""Structured log context: ``request_id`` and ``task_id`` on our own log lines.

Serve writes each replica's log as JSON (``logging_config.encoding: JSON``) under
the Ray session's ``logs/serve/``, and already tags every record logged in a
request with that request's ``request_id`` (the proxy honours an incoming
``X-Request-ID``, and DeploymentHandle calls carry it to downstream replicas,
including sync methods that Serve runs in a thread).

Serve removes a plain ``task_id`` record attribute (it is Ray's own task id), so
our fields travel in ``ray_serve_extra_fields``, which Ray's JSON formatter
flattens into top-level keys. Use::

    from app.core.logs import get_logger, log_context

    log = get_logger()  # the "ray.serve" logger, so lines land in the replica log
    with log_context(task_id=opts.pop("task_id", None)):
        log.info("transcribed %.1fs of audio", seconds)  # -> {"request_id", "task_id", ...}

or pass fields per call: ``log.info("...", extra=log_fields(task_id=tid))``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = [
    "EXTRA_FIELDS_KEY",
    "current_request_id",
    "current_task_id",
    "log_context",
    "log_fields",
    "get_logger",
    "ContextLogger",
]

# Ray's JSON formatter flattens this dict attribute into the log record's keys.
EXTRA_FIELDS_KEY = "ray_serve_extra_fields"

_fields: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "aipp_log_fields", default=None
)


def current_request_id() -> str | None:
    """The Serve request id of the request being handled here, if any."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or None
    except Exception:
        return None


def current_task_id() -> str | None:
    return (_fields.get() or {}).get("task_id")


@contextmanager
def log_context(task_id: str | None = None, **fields: Any) -> Iterator[None]:
    """Bind ``task_id`` (and any other fields) to every log line in this context.

    Context variables follow asyncio tasks and Serve's threads, so a field bound in
    a request handler also tags lines logged by what it awaits in this process.
    ``None`` values are left out; nested contexts add to (and override) outer ones.
    """
    merged = dict(_fields.get() or {})
    if task_id is not None:
        merged["task_id"] = str(task_id)
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


def log_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for one log call: the bound context plus ``fields`` (``None`` dropped).

    ``request_id`` is added only outside a Serve request (where Serve does not add
    it itself), e.g. when a background job was handed the id explicitly.
    """
    merged = dict(_fields.get() or {})
    merged.update({k: v for k, v in fields.items() if v is not None})
    if "request_id" in merged and current_request_id():
        merged.pop("request_id")  # Serve's own attribute already carries it
    return {EXTRA_FIELDS_KEY: merged} if merged else {}


class ContextLogger(logging.LoggerAdapter):
    """A logger whose records carry the bound :func:`log_context` fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        given = extra.pop(EXTRA_FIELDS_KEY, None) or {}
        fields = log_fields(**given).get(EXTRA_FIELDS_KEY)
        if fields:
            extra[EXTRA_FIELDS_KEY] = fields
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str = "ray.serve") -> ContextLogger:
    """Serve only captures the ``ray.serve`` logger (and its children) in replica logs."""
    return ContextLogger(logging.getLogger(name), {})
