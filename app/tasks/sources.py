"""Where a task's input comes from, and the one place it is read, bounded and measured.

A submission names its input as a source: an uploaded audio file, an ``audio_url``,
a transcript someone already has, or a live session's recording.
:func:`load_input` reads it within ``AIPP_MAX_UPLOAD_MB`` and measures it against
the route's minute limit, off the event loop: audio by its packets (not its
header), a transcript by parsing it. Every refusal raises before anything is
stored: :class:`InputRefused` (size, empty, too long) or the lower layers'
:class:`~app.speech.audio.AudioError`,
:class:`~app.speech.transcript_files.TranscriptFileError` and
:class:`~app.net.url_guard.URLFetchError`, each with its own code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from app.core.safe_text import safe_filename
from app.core.settings import Settings
from app.core.task_vocabulary import InputKind
from app.net.url_guard import check_url, fetch_audio
from app.speech.audio import measure
from app.speech.transcript_files import parse_transcript

CHUNK = 1024 * 1024


class AsyncReadable(Protocol):
    """An uploaded file as the web framework hands it over (Starlette's ``UploadFile``)."""

    filename: str | None
    size: int | None

    async def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class AudioUpload:
    file: AsyncReadable

    @property
    def filename(self) -> str | None:
        """The name as stored and shown: one clean line, at most 255 characters, the
        extension kept (:func:`~app.core.safe_text.safe_filename`). A NUL or a 600-character
        name used to reach the database (a 500 on PostgreSQL)."""
        return safe_filename(getattr(self.file, "filename", None))


@dataclass(frozen=True)
class AudioURL:
    url: str

    @property
    def filename(self) -> None:
        return None


@dataclass(frozen=True)
class TranscriptUpload:
    """A transcript someone already has (WebVTT, SRT, text, JSON turns): no speech to text."""

    file: AsyncReadable

    @property
    def filename(self) -> str | None:
        return safe_filename(getattr(self.file, "filename", None))


@dataclass(frozen=True)
class LiveRecording:
    """The audio a realtime session received (a WAV the session wrote), queued when it ends."""

    data: bytes
    duration_s: float
    filename: str


InputSource = AudioUpload | AudioURL | TranscriptUpload | LiveRecording


@dataclass(frozen=True)
class LoadedInput:
    data: bytes
    duration_s: float | None
    filename: str | None
    kind: InputKind = InputKind.AUDIO


class InputRefused(Exception):
    """The input cannot become a task: ``too_large`` (413) or ``empty`` (422)."""

    def __init__(self, code: str, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.too_large = too_large


def upload_limit(settings: Settings) -> int:
    """The largest accepted upload, in bytes."""
    return int(settings.max_upload_mb * 1024 * 1024)


def too_large(settings: Settings) -> InputRefused:
    return InputRefused(
        "file_too_large",
        f"the upload is larger than the limit of {settings.max_upload_mb:g} MiB",
        too_large=True,
    )


async def read_upload(file: AsyncReadable, settings: Settings) -> bytes:
    """The uploaded bytes, read in chunks against the limit (the body was spooled to disk)."""
    limit = upload_limit(settings)
    size = getattr(file, "size", None)
    if size is not None and size > limit:
        raise too_large(settings)
    data = bytearray()
    while chunk := await file.read(CHUNK):
        data += chunk
        if len(data) > limit:
            raise too_large(settings)
    if not data:
        raise InputRefused("empty_file", "the uploaded file is empty (0 bytes)")
    return bytes(data)


async def fetch_url(url: str, settings: Settings) -> bytes:
    """An ``audio_url``'s body, through the SSRF guard, within the size and time limits."""
    await asyncio.to_thread(check_url, url, settings.url_allow)  # resolves DNS
    data = await fetch_audio(
        url,
        max_bytes=upload_limit(settings),
        timeout_s=settings.url_fetch_timeout_s,
        allow=settings.url_allow,
    )
    if not data:
        raise InputRefused("empty_file", "the audio_url returned an empty body")
    return data


def check_audio(data: bytes, max_minutes: float) -> float | None:
    """Refuse non-audio and audio over ``max_minutes``, judged by its packets, not its header.

    A header can claim 1 minute for 25 (or no length at all): :func:`measure` walks
    the packets without decoding and stops at the limit. Returns the length in seconds.
    """
    return measure(data, max_duration_s=max_minutes * 60) or None


def check_transcript(data: bytes, filename: str | None, max_minutes: float) -> float:
    """Parse the transcript now (a bad file is a 422 at submission, not a failed task) and
    hold it to the same length limit as audio. Returns its length in seconds."""
    transcript = parse_transcript(data, filename)
    if transcript.duration_s > max_minutes * 60:
        raise InputRefused(
            "transcript_too_long",
            f"the transcript runs {transcript.duration_s / 60:.1f} minutes; "
            f"the limit is {max_minutes:g}",
            too_large=True,
        )
    return transcript.duration_s


async def load_input(source: InputSource, settings: Settings, max_minutes: float) -> LoadedInput:
    """Read the source and measure it (raises before anything is stored)."""
    if isinstance(source, TranscriptUpload):
        data = await read_upload(source.file, settings)
        duration = await asyncio.to_thread(check_transcript, data, source.filename, max_minutes)
        return LoadedInput(data, duration, source.filename, InputKind.TRANSCRIPT)
    if isinstance(source, LiveRecording):  # written here, its length known: no upload limit
        if source.duration_s > max_minutes * 60:
            raise InputRefused(
                "audio_too_long",
                f"the session recorded {source.duration_s / 60:.1f} minutes; "
                f"the limit is {max_minutes:g}",
                too_large=True,
            )
        if not source.duration_s:
            raise InputRefused("empty_file", "the live session received no audio")
        return LoadedInput(source.data, source.duration_s, source.filename)
    if isinstance(source, AudioUpload):
        data = await read_upload(source.file, settings)
    else:
        data = await fetch_url(source.url, settings)
    # Walking the packets of a large file takes a while: keep it off the event loop.
    duration = await asyncio.to_thread(check_audio, data, max_minutes)
    return LoadedInput(data=data, duration_s=duration, filename=source.filename)


__all__ = [
    "AudioURL",
    "AudioUpload",
    "InputRefused",
    "InputSource",
    "LiveRecording",
    "LoadedInput",
    "TranscriptUpload",
    "check_audio",
    "check_transcript",
    "load_input",
    "read_upload",
    "upload_limit",
]
