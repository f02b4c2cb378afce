"""Request bodies generated from the options models, so the docs cannot drift from the API.

``POST /v1/tasks`` takes multipart (a file and form fields) or JSON (``audio_url``
and the same fields); ``POST /v1/summarize`` takes multipart. Both their OpenAPI
request bodies and their parsing come from the pydantic options models of
``app/core/task_vocabulary.py``: a new option is one field there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request, UploadFile
from pydantic import BaseModel, ValidationError

from app.api.errors import APIError

MULTIPART = ("multipart/form-data", "application/x-www-form-urlencoded")
FILE_FIELD = "file"
TRANSCRIPT_FIELD = "transcript"
UPLOAD_FIELDS = (FILE_FIELD, TRANSCRIPT_FIELD)
#: Set by the task layer, never by a caller.
NOT_FROM_CALLERS = {"input"}


@dataclass(frozen=True)
class Uploads:
    """The files of a multipart body: audio (``file``) or a transcript (``transcript``)."""

    file: UploadFile | None = None
    transcript: UploadFile | None = None


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` (enums) written in place.

    OpenAPI resolves ``#/$defs/...`` from the document's root, where they do not exist;
    a route body built from a model must carry them itself.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**defs[ref.rsplit("/", 1)[-1]], **rest})
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return walk(schema)


def _properties(model: type[BaseModel], exclude: set[str]) -> dict[str, Any]:
    schema = _inlined(model.model_json_schema())
    return {k: v for k, v in schema.get("properties", {}).items() if k not in exclude}


def request_body(model: type[BaseModel], *, json_body: bool) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is parsed by :func:`parse_options`."""
    uploads = {
        FILE_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "Audio in any format FFmpeg reads (this, or `transcript`).",
        },
        TRANSCRIPT_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "A transcript you already have, instead of audio: WebVTT, SRT, "
            "plain text (`Name: ...` lines name speakers) or JSON speaker turns "
            "(`[{speaker, text, start, end}]`).",
        },
    }
    form: dict[str, Any] = {
        "type": "object",
        "properties": {**uploads, **_properties(model, {"audio_url"})},
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    if json_body:
        content["application/json"] = {"schema": _inlined(model.model_json_schema())}
    return {"requestBody": {"content": content, "required": True}}


def validate_body(model: type[BaseModel], fields: dict[str, Any], *, what: str = "request") -> Any:
    """The body as ``model``, or a 422 ``invalid_request`` that names the first bad field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or what
        raise APIError(
            422, "invalid_request", f"{field}: {first.get('msg')}", extra={"field": field}
        ) from None


def _upload(form: Any, name: str) -> UploadFile | None:
    value = form.get(name)
    if value is not None and isinstance(value, str):
        raise APIError(422, "missing_file", f"the field '{name}' must be a file upload")
    return value


async def parse_options(
    request: Request, model: type[BaseModel], *, json_body: bool
) -> tuple[Any, Uploads]:
    """``(options, uploads)``: multipart form fields beside a file, or (``json_body``) a
    JSON object (no uploads). Unknown fields are ignored, as before."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(MULTIPART):
        form = await request.form()
        fields = {
            k: v
            for k, v in form.items()
            if k not in UPLOAD_FIELDS and k not in NOT_FROM_CALLERS and isinstance(v, str) and v
        }
        options = validate_body(model, fields)
        return options, Uploads(_upload(form, FILE_FIELD), _upload(form, TRANSCRIPT_FIELD))
    if json_body and ctype.startswith("application/json"):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            # RecursionError: JSON nested deeper than the parser goes (a 500 before).
            raise APIError(400, "invalid_json", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(422, "invalid_request", "the JSON body must be an object")
        fields = {k: v for k, v in body.items() if k not in NOT_FROM_CALLERS}
        return validate_body(model, fields), Uploads()
    if json_body:
        message = "use multipart/form-data with a 'file', or application/json with 'audio_url'"
    else:
        message = "use multipart/form-data with a 'file'"
    raise APIError(415, "unsupported_content_type", message)


__all__ = [
    "FILE_FIELD",
    "TRANSCRIPT_FIELD",
    "Uploads",
    "parse_options",
    "request_body",
    "validate_body",
]
