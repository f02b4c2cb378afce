"""Routes of the web console: its static files, transcript search, and task audio.

The console is plain HTML/CSS/ES modules served from this package: no build
step and no request leaves the service. Everything it shows comes from the
public API with the caller's key, so it can never show more than the key may see.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from app import __version__
from app.api.auth import Principal, auth_required
from app.api.deps import door_of, principal
from app.api.errors import APIError
from app.tasks.door import SEARCH_MAX_LIMIT, AudioGone, EmptySearch

router = APIRouter()
STATIC_DIR = Path(__file__).resolve().parent / "static"
# The console's scripts (ES modules, which need a JavaScript type) and stylesheets,
# served by bare file name: only names listed here, so no path can reach other files.
_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}
_ASSETS = {
    path.name: _ASSET_TYPES[path.suffix]
    for path in STATIC_DIR.iterdir()
    if path.suffix in _ASSET_TYPES
}
# Magic numbers of the containers people upload, for when the filename has no extension.
_MAGIC = [
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"\xff\xf3", "audio/mpeg"),
    (b"\x1aE\xdf\xa3", "audio/webm"),
]
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)$", re.ASCII)
#: More digits than any file's size has: such an offset is simply past the end (``int()``
#: refuses over 4,300 digits, which used to be a 500).
_MAX_DIGITS = 18


# --- pages ---------------------------------------------------------------------


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


# The console runs no inline script and loads nothing from elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
def console_page() -> HTMLResponse:
    html = (STATIC_DIR / "console.html").read_text(encoding="utf-8")
    # Cache-Control, nosniff and Referrer-Policy: app/api/headers.py, on every response.
    return HTMLResponse(html, headers={"Content-Security-Policy": _CSP})


@router.get("/console/static/{name}", include_in_schema=False)
def console_asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise APIError(404, "not_found", f"no console file '{name}'")
    return FileResponse(STATIC_DIR / name, media_type=media_type)


class ConsoleConfig(BaseModel):
    version: str
    auth_required: bool = Field(description="Whether the console must ask for an API key.")
    max_upload_mb: float
    dashboard_port: int = Field(description="Port of the Ray dashboard on the same host.")


@router.get("/console/config.json", response_model=ConsoleConfig, include_in_schema=False)
def console_config(request: Request) -> ConsoleConfig:
    """What the page needs before the first API call; nothing tenant-specific."""
    settings = door_of(request).settings
    return ConsoleConfig(
        version=__version__,
        auth_required=auth_required(settings),
        max_upload_mb=settings.max_upload_mb,
        dashboard_port=settings.dashboard_port,
    )


# --- search ----------------------------------------------------------------------


class SearchHit(BaseModel):
    task_id: str
    filename: str | None
    created_at: datetime
    segment: int = Field(description="The segment's id in the task's transcript.")
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    text: str


class SearchPage(BaseModel):
    query: str
    terms: list[str] = Field(description="The words searched for (the last one as a prefix).")
    data: list[SearchHit]


@router.get(
    "/v1/search",
    response_model=SearchPage,
    tags=["search"],
    summary="Search the caller's transcripts; segments best first",
    responses={422: {"description": "The query has no words"}},
)
def search_transcripts(
    request: Request,
    q: str = Query(..., min_length=1, max_length=200, description="Words to find."),
    limit: int = Query(20, ge=1, le=SEARCH_MAX_LIMIT),
    caller: Principal = Depends(principal),
) -> SearchPage:
    try:
        hits, terms = door_of(request).search(caller.tenant_id, q, limit)
    except EmptySearch:
        raise APIError(422, "empty_query", "the query has no words to search for") from None
    return SearchPage(
        query=q,
        terms=terms,
        data=[SearchHit(**hit.__dict__) for hit in hits],
    )


# --- audio -------------------------------------------------------------------------


def _media_type(filename: str | None, head: bytes) -> str:
    if filename:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed and guessed.startswith(("audio/", "video/")):
            return guessed
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    return "application/octet-stream"


def _size_and_rewind(fh) -> int:
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    return size


def _offset(digits: str) -> int:
    """A Range offset, bounded: a longer number than any size is read as "past the end"."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``Range: bytes=`` request; ``None`` for the whole file.

    Total: any header value gives a span or a 416 naming the problem.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise APIError(416, "range_not_satisfiable", "only one 'bytes=first-last' range is served")
    if m.group(1):
        first = _offset(m.group(1))
        last = min(_offset(m.group(2)), size - 1) if m.group(2) else size - 1
    else:  # a suffix: the last N bytes
        first, last = max(0, size - _offset(m.group(2))), size - 1
    if first > last or first >= size:
        raise APIError(
            416,
            "range_not_satisfiable",
            f"the audio has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return first, last


@router.get(
    "/v1/tasks/{task_id}/audio",
    tags=["tasks"],
    summary="The task's stored audio (supports Range, for seeking players)",
    response_class=StreamingResponse,
    responses={404: {"description": "No such task for this caller, or no stored audio"}},
)
async def task_audio(task_id: str, request: Request, caller: Principal = Depends(principal)):
    door = door_of(request)
    task = await door.get(task_id, caller.tenant_id)
    if task is None:
        raise APIError(404, "task_not_found", f"no task '{task_id}'")
    try:
        fh = await asyncio.to_thread(door.open_audio, task)
    except AudioGone as exc:
        raise APIError(404, "audio_not_found", str(exc)) from None
    size = await asyncio.to_thread(_size_and_rewind, fh)
    head = await asyncio.to_thread(fh.read, 12)
    media_type = _media_type(task.audio_filename, head)
    try:
        span = _byte_range(request.headers.get("range"), size)
    except APIError:
        fh.close()
        raise
    first, last = span or (0, size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1),
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    def chunks() -> Iterator[bytes]:
        try:
            fh.seek(first)
            remaining = last - first + 1
            while remaining > 0:
                chunk = fh.read(min(1 << 16, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            fh.close()

    return StreamingResponse(
        chunks(), status_code=206 if span else 200, media_type=media_type, headers=headers
    )
