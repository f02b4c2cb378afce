"""Read an upload within the size limit and measure its audio before any model sees it.

The body itself is bounded earlier: ``app/api/guard.py`` refuses an over-limit
``Content-Length`` before anything is read and stops a chunked body at the limit,
while Starlette's multipart parser spools file parts to a temporary file on disk
(past 1 MiB), so a large upload never sits in memory whole while it arrives.
Here the spooled file is read back in chunks, still against the limit.
"""

from __future__ import annotations

from fastapi import UploadFile

from app.api.errors import APIError, to_api_error
from app.core.settings import Settings
from app.speech.audio import AudioError, measure

CHUNK = 1024 * 1024


def upload_limit(settings: Settings) -> int:
    """The largest accepted upload, in bytes."""
    return int(settings.max_upload_mb * 1024 * 1024)


async def read_upload(file: UploadFile | None, settings: Settings) -> bytes:
    """The uploaded bytes; 422 if missing or empty, 413 past ``AIPP_MAX_UPLOAD_MB``."""
    if file is None:
        raise APIError(422, "missing_file", "the multipart field 'file' is required")
    limit = upload_limit(settings)
    if file.size is not None and file.size > limit:
        raise too_large(settings)
    data = bytearray()
    while chunk := await file.read(CHUNK):
        data += chunk
        if len(data) > limit:
            raise too_large(settings)
    if not data:
        raise APIError(422, "empty_file", "the uploaded file is empty (0 bytes)")
    return bytes(data)


def too_large(settings: Settings) -> APIError:
    return APIError(
        413,
        "file_too_large",
        f"the upload is larger than the limit of {settings.max_upload_mb:g} MiB",
    )


def check_audio(data: bytes, max_minutes: float) -> float | None:
    """Refuse non-audio and audio over ``max_minutes``, judged by its packets, not its header.

    A header can claim 1 minute for 25 (or no length at all): :func:`measure` walks
    the packets without decoding and stops at the limit. Returns the length in seconds.
    """
    try:
        return measure(data, max_duration_s=max_minutes * 60) or None
    except AudioError as exc:
        raise to_api_error(exc) from None
