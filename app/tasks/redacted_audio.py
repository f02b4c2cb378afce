"""The redacted copy of a task's audio (``redact_audio``): the words that redaction
replaced are covered by a tone, the copy becomes the task's stored audio, and the
original is deleted unless ``redact_keep_original`` (so is an uploaded transcript,
once its redacted result is stored).

Made before the task succeeds (so nobody is served the original once the result is
out), from the result's ``redaction.audio_spans``; a cached result carries them too,
so a cache hit gets its own copy. The original is deleted after success, and only if
no other task points at it (the same tenant may have uploaded the same audio plainly).
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import soundfile as sf

from app.core.task_vocabulary import InputKind, ProcessingOptions
from app.privacy.audio import Cover, cover_spans
from app.speech.audio import SAMPLE_RATE, decode
from app.storage.clients import Services
from app.storage.sql.models import Task

logger = logging.getLogger("ray.serve")


def wanted(options: ProcessingOptions) -> bool:
    return options.redact_pii and options.redact_audio and options.input == InputKind.AUDIO


def covered_wav(audio: bytes, spans: list[tuple[float, float]]) -> bytes:
    """16 kHz mono WAV of ``audio`` with every span covered by the tone."""
    samples, _ = cover_spans(decode(audio), SAMPLE_RATE, spans, Cover.TONE)
    out = io.BytesIO()
    sf.write(out, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def store_redacted_copy(
    services: Services, task: Task, audio: bytes, payload: dict[str, Any]
) -> dict[str, Any]:
    """Store the covered copy, point the task at it; the payload says so."""
    redaction = dict(payload.get("redaction") or {})
    spans = [tuple(span) for span in redaction.get("audio_spans") or []]
    wav = await asyncio.to_thread(covered_wav, audio, spans)
    _, uri = await asyncio.to_thread(services.blobs.put, wav, task.tenant_id)
    await asyncio.to_thread(services.store.set_audio_uri, task.id, uri)
    keep = ProcessingOptions.from_stored(task.options).redact_keep_original
    redaction.update(audio=Cover.TONE.value, original_kept=keep)
    return {**payload, "redaction": redaction}


async def drop_original(services: Services, task: Task) -> None:
    """Delete the unredacted upload (audio replaced by its redacted copy, or an uploaded
    transcript) unless the policy keeps it or another task uses it."""
    options = ProcessingOptions.from_stored(task.options)
    uploaded_text = options.redact_pii and options.input == InputKind.TRANSCRIPT
    if not (wanted(options) or uploaded_text) or options.redact_keep_original:
        return
    original = task.audio_uri
    if not original:
        return
    # An audio task points at its copy now; a transcript task still points at the upload.
    except_id = task.id if uploaded_text else None
    try:
        await asyncio.to_thread(
            services.blobs.retire,
            original,
            lambda: services.store.audio_uri_in_use(original, except_id),
        )
    except Exception:  # the retention purge and DELETE still remove it later
        logger.warning("could not delete the original audio of %s", task.id, exc_info=True)


__all__ = ["covered_wav", "drop_original", "store_redacted_copy", "wanted"]
