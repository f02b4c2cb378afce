"""``stream=true`` on ``POST /v1/audio/transcriptions``: the transcript as server-sent events.

What the ``openai`` SDK's ``stream=True`` consumes: ``transcript.text.delta`` events
(``{"type", "delta"}``) as the text comes, then one ``transcript.text.done``
(``{"type", "text", "usage"}``). The audio is cut at its pauses into spans of at most
30 s (Whisper's window; the same spans as the batched pipeline's,
:func:`app.speech.stt.speech_spans`), and the spans go to the Transcriber one after
another, so the first words arrive after the first span, not after the whole file.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from app.core.logs import get_logger
from app.speech.audio import SAMPLE_RATE, decode
from app.speech.streaming import float_to_pcm16, wav_bytes
from app.speech.stt import SttOptions, speech_spans
from app.tasks.pipeline import Pipeline

log = get_logger()


def _sse(data: dict) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def stream_transcription(
    pipeline: Pipeline, audio: bytes, options: SttOptions
) -> StreamingResponse:
    """Decode and cut now (a bad file is still an HTTP error), then stream the spans' text."""
    pcm = await asyncio.to_thread(decode, audio)
    spans = await asyncio.to_thread(speech_spans, pcm)

    async def events() -> AsyncIterator[bytes]:
        texts: list[str] = []
        for start, end in spans:
            out = await pipeline.transcribe(wav_bytes(float_to_pcm16(pcm[start:end])), options)
            text = out.transcript.text.strip()
            if not text:
                continue
            yield _sse({"type": "transcript.text.delta", "delta": (" " if texts else "") + text})
            texts.append(text)
        seconds = math.ceil(pcm.shape[0] / SAMPLE_RATE)
        log.info("openai streamed transcription: %ss of audio, %d spans", seconds, len(spans))
        yield _sse(
            {
                "type": "transcript.text.done",
                "text": " ".join(texts),
                "usage": {"type": "duration", "seconds": seconds},
            }
        )

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


__all__ = ["stream_transcription"]
