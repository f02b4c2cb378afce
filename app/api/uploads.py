"""Uploads for the routes that do not make tasks (the OpenAI-compatible ones): the task
layer's reader and audio check (``app/tasks/sources.py``), with their refusals as HTTP.

The body itself is bounded earlier: ``app/api/guard.py`` refuses an over-limit
``Content-Length`` before anything is read and stops a chunked body at the limit,
while Starlette's multipart parser spools file parts to a temporary file on disk
(past 1 MiB), so a large upload never sits in memory whole while it arrives.
"""

from __future__ import annotations

from fastapi import UploadFile

from app.api.deps import submission_error
from app.api.errors import APIError
from app.core.settings import Settings
from app.speech.audio import AudioError
from app.tasks import sources


async def read_upload(file: UploadFile | None, settings: Settings) -> bytes:
    """The uploaded bytes; 422 if missing or empty, 413 past ``AIPP_MAX_UPLOAD_MB``."""
    if file is None:
        raise APIError(422, "missing_file", "the multipart field 'file' is required")
    try:
        return await sources.read_upload(file, settings)
    except sources.InputRefused as exc:
        raise submission_error(exc) from None


def check_audio(data: bytes, max_minutes: float) -> float | None:
    """The audio's length in seconds; 422 for non-audio, 413 past ``max_minutes``."""
    try:
        return sources.check_audio(data, max_minutes)
    except AudioError as exc:
        raise submission_error(exc) from None
