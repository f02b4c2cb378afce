"""Read an upload within the size limit and check its header before any model sees it."""

from __future__ import annotations

from fastapi import UploadFile

from app.speech.audio import AudioError, probe
from app.api.errors import APIError
from app.core.settings import Settings


async def read_upload(file: UploadFile | None, settings: Settings) -> bytes:
    if file is None:
        raise APIError(422, "missing_file", "the multipart field 'file' is required")
    limit = int(settings.max_upload_mb * 1024 * 1024)
    if file.size is not None and file.size > limit:
        raise _too_large(settings)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise _too_large(settings)
    if not data:
        raise APIError(422, "empty_file", "the uploaded file is empty (0 bytes)")
    return data


def _too_large(settings: Settings) -> APIError:
    return APIError(
        413,
        "file_too_large",
        f"the upload is larger than the limit of {settings.max_upload_mb:g} MiB",
    )


def check_audio(data: bytes, max_minutes: float) -> float | None:
    """Header-only probe: refuses non-audio and over-long audio without decoding it."""
    try:
        return probe(data, max_duration_s=max_minutes * 60).duration_s
    except AudioError as exc:
        raise APIError(exc.status_code, exc.code, exc.message) from None
