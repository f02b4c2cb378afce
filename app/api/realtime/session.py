"""One live transcription session: audio in, VAD-cut utterances, deltas and completions out.

The policy is :mod:`app.speech.streaming`'s (utterance cuts, local agreement); this
class applies it to a WebSocket's events. Decoding is the Transcriber deployment's
(``transcribe``: WAV bytes → text, through the pipeline's handle). A finished
utterance's decode starts at once, and often earlier: when speech pauses for 200 ms
the utterance's final audio is already known, so its decode starts then and the
rest of the pause (``silence_duration_ms``) only confirms it. Completions go out in
utterance order. Re-decodes of the utterance still being spoken run one at a time,
only while no final is pending and for at most half of the decoder's time, so a slow
machine skips interim work instead of falling behind.

Every sample received is kept (spooled to disk past 8 MiB) so that the session can
become a task when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.api.realtime.protocol import ProtocolError, SessionConfig, event, new_id
from app.speech.live_vad import SileroFrames
from app.speech.streaming import (
    SAMPLE_RATE,
    LocalAgreement,
    Pause,
    Resampler,
    SpeechStarted,
    Utterance,
    UtteranceCutter,
    VadConfig,
    float_to_pcm16,
    pcm16_to_float,
    wav_bytes,
    words_of,
)
from app.speech.stt import SttOptions

logger = logging.getLogger(__name__)

#: The most of the session's last words given to Whisper as the next decode's prompt.
PROMPT_CHARS = 200

#: near_field: an utterance this far below the loudest one (RMS; 0.3 is -10.5 dB) is
#: background. Measured on the AMI headset tracks (bench/realtime.py): without it their
#: neighbours' bleed is transcribed; on a room microphone it would drop quiet speakers.
NEAR_FIELD_RATIO = 0.3

#: ``await transcribe(wav_bytes, options)`` → the text (the Transcriber, via its handle).
Transcribe = Callable[[bytes, SttOptions], Awaitable[str]]
#: ``await send(event)``: one server event to the client.
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Segment:
    """A completed utterance, as the session's transcript keeps it."""

    item_id: str
    start_ms: int
    end_ms: int
    text: str


@dataclass
class _Item:
    id: str
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    decoded_samples: int = 0


class LiveSession:
    def __init__(
        self,
        config: SessionConfig,
        transcribe: Transcribe,
        send: Send,
        *,
        max_audio_s: float,
        max_utterance_s: float = 15.0,
        decode_interval_s: float = 1.0,
    ) -> None:
        self.config = config
        self._transcribe = transcribe
        self._send = send
        self.max_samples = int(max_audio_s * SAMPLE_RATE)
        self.max_utterance_s = max_utterance_s
        self.interval = int(decode_interval_s * SAMPLE_RATE)
        self.cutter = UtteranceCutter(self._vad_config())
        self._resampler = Resampler(config.rate)
        self.vad = SileroFrames()
        self.audio = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        self.samples = 0
        self.segments: list[Segment] = []
        self._item: _Item | None = None
        self._previous_item: str | None = None
        #: Finished utterances in order, each with its decode already under way.
        self._finals: asyncio.Queue[tuple[_Item, Utterance, asyncio.Future]] = asyncio.Queue()
        #: The one re-decode of the utterance being spoken (or a decode started at a pause).
        self._interim: asyncio.Future | None = None
        self._spec: tuple[_Item, int, asyncio.Future] | None = None
        self._decoded_at = 0.0
        self._decode_s = 0.0
        self._loudest = 0.0
        self._worker = asyncio.ensure_future(self._work())
        #: Wall-clock time (monotonic) of the last sample appended, for latency figures.
        self.last_append = time.monotonic()

    def _vad_config(self) -> VadConfig:
        c = self.config
        return VadConfig(c.threshold, c.prefix_padding_ms, c.silence_ms, self.max_utterance_s)

    def reconfigure(self) -> None:
        """After a session update: new VAD settings apply from the next utterance."""
        self.cutter.config = self._vad_config()
        if self._resampler.rate != self.config.rate:
            self._resampler = Resampler(self.config.rate)

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    # --- client events --------------------------------------------------------------

    async def append(self, audio_b64: Any) -> None:
        if not isinstance(audio_b64, str):
            raise ProtocolError("invalid_value", "'audio' must be a base64 string", param="audio")
        try:
            raw = base64.b64decode(audio_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                "invalid_audio", "'audio' is not valid base64", param="audio", close=1007
            ) from None
        if len(raw) % 2:
            raise ProtocolError(
                "invalid_audio_format",
                "audio must be 16-bit PCM: an odd number of bytes was sent",
                param="audio",
                close=1007,
            )
        pcm = self._resampler(pcm16_to_float(raw))
        if self.samples + pcm.shape[0] > self.max_samples:
            raise ProtocolError(
                "session_too_long",
                f"the session reached the longest audio accepted "
                f"({self.max_samples / SAMPLE_RATE / 60:g} minutes)",
                close=1000,
            )
        self.audio.write(float_to_pcm16(pcm))
        self.samples += pcm.shape[0]
        self.last_append = time.monotonic()
        frames = self.cutter.frames(pcm)
        probs = self.vad.probabilities(frames) if self.config.vad else [1.0] * len(frames)
        for frame, prob in zip(frames, probs, strict=True):
            for ev in self.cutter.push(frame, prob):
                if isinstance(ev, SpeechStarted):
                    await self._started(ev)
                elif isinstance(ev, Pause):
                    self._paused(ev)
                else:
                    await self._stopped(ev)
        self._maybe_redecode()

    async def commit(self) -> None:
        utt = self.cutter.commit()
        if utt is None:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "there is no speech in the buffer to commit",
            )
        await self._stopped(utt)

    async def clear(self) -> None:
        self.cutter.clear()
        self._item = None
        await self._send(event("input_audio_buffer.cleared"))

    async def finish(self, timeout_s: float = 60.0) -> list[Segment]:
        """The session ends: the utterance in progress is final; wait for its decode."""
        utt = self.cutter.commit()
        if utt is not None and utt.audio.shape[0] >= SAMPLE_RATE // 10:
            await self._stopped(utt)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._finals.join(), timeout_s)
        self._worker.cancel()
        return self.segments

    def recording(self) -> bytes:
        """Everything received, as a 16 kHz WAV."""
        self.audio.seek(0)
        return wav_bytes(self.audio.read())

    def close(self) -> None:
        self._worker.cancel()
        for pending in (self._interim, self._spec[2] if self._spec else None):
            if pending is not None:
                pending.cancel()
        self.audio.close()

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    # --- utterances -----------------------------------------------------------------

    async def _started(self, ev: SpeechStarted) -> None:
        self._item = _Item(new_id("item"))
        if self.config.vad:
            await self._send(
                event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=ev.start_ms,
                    item_id=self._item.id,
                )
            )

    async def _stopped(self, utt: Utterance) -> None:
        item = self._item or _Item(new_id("item"))
        self._item = None
        if self.config.vad and utt.reason != "commit":
            await self._send(
                event(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=utt.end_ms,
                    item_id=item.id,
                )
            )
        await self._send(
            event(
                "input_audio_buffer.committed",
                item_id=item.id,
                previous_item_id=self._previous_item,
            )
        )
        self._previous_item = item.id
        spec, self._spec = self._spec, None
        if spec is not None and spec[0] is item and spec[1] == utt.audio.shape[0]:
            decoding = spec[2]  # the pause's decode was of exactly this audio
        else:
            decoding = asyncio.ensure_future(self._decode(utt.audio))
        self._finals.put_nowait((item, utt, decoding))

    def _paused(self, ev: Pause) -> None:
        """Speech paused: decode the utterance as it would end here, at once (if the pause
        lasts, that decode is the final one; if not, it serves as a re-decode)."""
        item = self._item
        if item is None or not self.config.vad:
            return
        decoding = asyncio.ensure_future(self._decode(ev.audio))
        self._spec = (item, ev.audio.shape[0], decoding)
        decoding.add_done_callback(lambda f, item=item: self._spec_done(item, f))

    def _spec_done(self, item: _Item, future: asyncio.Future) -> None:
        if item is self._item and not future.cancelled() and future.exception() is None:
            asyncio.ensure_future(self._agree(item, future.result()))

    def _maybe_redecode(self) -> None:
        item = self._item
        if item is None or not self._finals.empty():
            return
        if self._interim is not None and not self._interim.done():
            return
        # Re-decodes take at most half the decoder's time, so finals never queue behind
        # them on a busy machine: after a decode of d seconds, wait d before the next one.
        if time.monotonic() - self._decoded_at < self._decode_s:
            return
        spoken = self.cutter.speech_samples()
        if spoken - item.decoded_samples < self.interval:
            return
        item.decoded_samples = spoken
        self._interim = asyncio.ensure_future(self._redecode(item, self.cutter.speech_audio()))

    # --- the decoder ----------------------------------------------------------------

    def _options(self) -> SttOptions:
        # One temperature, no fallback schedule: a decode's time stays bounded (a short,
        # unsure utterance could otherwise be decoded up to six times). The words just
        # said are the prompt: a cut utterance keeps its context, as one long decode would.
        said = " ".join(s.text for s in self.segments[-3:] if s.text)[-PROMPT_CHARS:]
        prompt = " ".join(p for p in (self.config.prompt, said) if p) or None
        return SttOptions(language=self.config.language, initial_prompt=prompt, temperature=0.0)

    def _background(self, audio: np.ndarray) -> bool:
        """near_field: an utterance over 10 dB below the loudest one so far is someone
        else's voice bleeding into the headset (it stays in the recording and the task)."""
        rms = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
        self._loudest = max(self._loudest, rms)
        return self.config.near_field and rms < NEAR_FIELD_RATIO * self._loudest

    async def _decode(self, audio: np.ndarray) -> list[str]:
        if self._background(audio):
            return []
        started = time.monotonic()
        try:
            text = await self._transcribe(wav_bytes(float_to_pcm16(audio)), self._options())
        finally:
            self._decoded_at = time.monotonic()
            self._decode_s = self._decoded_at - started
        return words_of(text)

    async def _work(self) -> None:
        """Finished utterances, in order: await each one's decode, then tell the client."""
        while True:
            item, utt, decoding = await self._finals.get()
            try:
                await self._final(item, utt, await decoding)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the decode failed: say so, keep the session
                logger.warning("realtime decode failed: %r", exc)
                await self._safe_send(
                    event(
                        "conversation.item.input_audio_transcription.failed",
                        item_id=item.id,
                        content_index=0,
                        error={
                            "type": "server_error",
                            "code": "transcription_failed",
                            "message": f"transcription failed: {type(exc).__name__}",
                        },
                    )
                )
            finally:
                self._finals.task_done()

    async def _redecode(self, item: _Item, audio: np.ndarray) -> None:
        try:
            hypothesis = await self._decode(audio)
        except Exception as exc:  # an interim look: the final decode will say if it fails
            logger.info("realtime re-decode failed: %r", exc)
            return
        await self._agree(item, hypothesis)

    async def _agree(self, item: _Item, hypothesis: list[str]) -> None:
        """A decode of the utterance so far: commit what two decodes agree on."""
        if item is not self._item:  # it ended meanwhile: its final decode decides
            return
        new = item.agreement.update(hypothesis)
        if new:
            await self._delta(item, new)
        # aipp: the words not yet agreed on, for captions that show them apart (they may
        # change; OpenAI clients ignore an event type they do not know).
        await self._safe_send(
            event(
                "aipp.transcription.tail",
                item_id=item.id,
                text=" ".join(hypothesis[len(item.agreement.committed) :]),
            )
        )

    async def _final(self, item: _Item, utt: Utterance, words: list[str]) -> None:
        tail = item.agreement.finish(words)
        if tail:
            await self._delta(item, tail)
        text = item.agreement.text
        self.segments.append(Segment(item.id, utt.start_ms, utt.end_ms, text))
        await self._safe_send(
            event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item.id,
                content_index=0,
                transcript=text,
                usage={"type": "duration", "seconds": round(utt.audio.shape[0] / SAMPLE_RATE, 3)},
                # aipp: where the utterance's speech lies on the session's clock.
                audio_start_ms=utt.start_ms,
                audio_end_ms=utt.end_ms,
            )
        )

    async def _delta(self, item: _Item, words: list[str]) -> None:
        first = len(item.agreement.committed) == len(words)
        text = ("" if first else " ") + " ".join(words)
        await self._safe_send(
            event(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.id,
                content_index=0,
                delta=text,
            )
        )

    async def _safe_send(self, ev: dict[str, Any]) -> None:
        """The client may be gone while a decode finishes: the transcript is kept anyway."""
        try:
            await self._send(ev)
        except Exception:
            pass


__all__ = ["LiveSession", "Segment"]
