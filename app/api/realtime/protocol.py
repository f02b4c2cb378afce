"""The OpenAI Realtime transcription protocol: the client events we accept, the session
configuration they set, and the server events we send (as plain dicts, the wire shape).

Both shapes the ``openai`` SDK speaks are accepted: the GA ``session.update`` with
``session.type == "transcription"`` (``audio.input.format/transcription/turn_detection``)
and the beta ``transcription_session.update`` (``input_audio_format``,
``input_audio_transcription``, ``turn_detection``); the reply uses the same family.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from app.core.task_vocabulary import TaskOptions

#: Sample rates accepted for ``audio/pcm`` (OpenAI takes 24 kHz only; 16 kHz is ours).
RATES = (16_000, 24_000)

CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "session.finish",
)


class ProtocolError(Exception):
    """A client event we refuse: sent back as an ``error`` event.

    ``close`` is the WebSocket close code when the session cannot go on (``None``: the
    session stays open, as OpenAI's recoverable errors do).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        close: int | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.close = close
        self.event_id = event_id


#: The close code for an audio format we cannot read (1003, "unsupported data"): the
#: audio that follows would be read in the wrong format, so the session ends.
UNREADABLE_AUDIO = 1003


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class SessionConfig:
    """What a transcription session is set to (OpenAI's defaults, 24 kHz PCM16)."""

    id: str = field(default_factory=lambda: new_id("sess"))
    rate: int = 24_000
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    vad: bool = True
    threshold: float = 0.5
    #: 500 ms, not OpenAI's 300: Silero rises late on soft onsets ("ask" in the JFK clip).
    prefix_padding_ms: int = 500
    silence_ms: int = 500
    #: ``noise_reduction: near_field``: drop utterances far quieter than the loudest so far.
    near_field: bool = False
    #: ``beta`` when the client spoke ``transcription_session.*``: replies match.
    beta: bool = False
    #: aipp's extension: the options of the task the session becomes (webhook, diarize…).
    task: TaskOptions = field(default_factory=TaskOptions)
    #: aipp: ``aipp_task: false`` keeps nothing when the session ends (captions only).
    keep: bool = True

    def apply(self, event: dict[str, Any]) -> None:
        """Apply a ``session.update`` / ``transcription_session.update`` (raises ProtocolError)."""
        session = event.get("session")
        if not isinstance(session, dict):
            raise ProtocolError("invalid_value", "'session' must be an object", param="session")
        if event["type"] == "transcription_session.update":
            self.beta = True
            fmt = session.get("input_audio_format")
            if fmt is not None:
                self._beta_format(fmt)
            self._transcription(session.get("input_audio_transcription"))
            if "input_audio_noise_reduction" in session:
                self._noise_reduction(session["input_audio_noise_reduction"], "session")
            if "turn_detection" in session:
                self._turn_detection(session["turn_detection"], "session.turn_detection")
        else:
            kind = session.get("type", "transcription")
            if kind != "transcription":
                raise ProtocolError(
                    "unsupported_session_type",
                    f"session.type '{kind}' is not served here: only 'transcription' "
                    "(speech to text) sessions are",
                    param="session.type",
                )
            audio_in = (session.get("audio") or {}).get("input") or {}
            if not isinstance(audio_in, dict):
                raise ProtocolError("invalid_value", "session.audio.input must be an object")
            if audio_in.get("format") is not None:
                self._format(audio_in["format"])
            if "noise_reduction" in audio_in:
                self._noise_reduction(audio_in["noise_reduction"], "session.audio.input")
            self._transcription(audio_in.get("transcription"))
            if "turn_detection" in audio_in:
                self._turn_detection(
                    audio_in["turn_detection"], "session.audio.input.turn_detection"
                )
        if session.get("aipp_task") is False:
            self.keep = False  # captions only: the session does not become a task
        elif session.get("aipp_task") is not None:
            try:
                self.task = TaskOptions.model_validate(session["aipp_task"])
            except ValueError as exc:
                raise ProtocolError(
                    "invalid_value", f"session.aipp_task: {exc}", param="session.aipp_task"
                ) from None

    def _format(self, fmt: Any) -> None:
        param = "session.audio.input.format"
        if not isinstance(fmt, dict):
            raise ProtocolError("invalid_value", f"{param} must be an object", param=param)
        kind = fmt.get("type", "audio/pcm")
        if kind != "audio/pcm":
            raise ProtocolError(
                "unsupported_audio_format",
                f"audio format '{kind}' is not supported: send 'audio/pcm' "
                "(16-bit little-endian mono PCM at 16000 or 24000 Hz)",
                param=param,
                close=UNREADABLE_AUDIO,
            )
        rate = fmt.get("rate", 24_000)
        if rate not in RATES:
            raise ProtocolError(
                "unsupported_audio_format",
                f"sample rate {rate!r} is not supported: use 16000 or 24000",
                param=f"{param}.rate",
                close=UNREADABLE_AUDIO,
            )
        self.rate = int(rate)

    def _beta_format(self, fmt: Any) -> None:
        if fmt != "pcm16":
            raise ProtocolError(
                "unsupported_audio_format",
                f"input_audio_format {fmt!r} is not supported: send 'pcm16' (24 kHz mono)",
                param="session.input_audio_format",
                close=UNREADABLE_AUDIO,
            )
        self.rate = 24_000

    def _noise_reduction(self, value: Any, where: str) -> None:
        """``near_field`` (a headset): voices much quieter than the wearer's are background
        (other people's speech bleeding in) and are not transcribed; ``far_field`` and
        ``null``: every voice counts (a room microphone hears quiet speakers too)."""
        kind = value.get("type") if isinstance(value, dict) else None
        if value is not None and kind not in ("near_field", "far_field"):
            raise ProtocolError(
                "invalid_value",
                "noise_reduction.type must be 'near_field' or 'far_field' (or null)",
                param=f"{where}.noise_reduction",
            )
        self.near_field = kind == "near_field"

    def _transcription(self, value: Any) -> None:
        if not isinstance(value, dict):
            return
        self.model = str(value.get("model") or self.model)
        language = value.get("language")
        self.language = str(language) if language else None
        prompt = value.get("prompt")
        self.prompt = str(prompt) if prompt else None

    def _turn_detection(self, value: Any, param: str) -> None:
        if value is None:
            self.vad = False  # the client commits each utterance itself
            return
        if not isinstance(value, dict):
            raise ProtocolError("invalid_value", f"{param} must be an object or null", param=param)
        kind = value.get("type", "server_vad")
        if kind not in ("server_vad", "semantic_vad"):  # semantic_vad: served as server_vad
            raise ProtocolError(
                "invalid_value", f"turn_detection type {kind!r} is not supported", param=param
            )
        self.vad = True
        try:
            if value.get("threshold") is not None:
                self.threshold = min(max(float(value["threshold"]), 0.2), 0.95)
            if value.get("prefix_padding_ms") is not None:
                self.prefix_padding_ms = min(max(int(value["prefix_padding_ms"]), 0), 2000)
            if value.get("silence_duration_ms") is not None:
                self.silence_ms = min(max(int(value["silence_duration_ms"]), 100), 5000)
        except (TypeError, ValueError):
            raise ProtocolError(
                "invalid_value", f"{param}: numbers expected", param=param
            ) from None

    # --- what we tell the client ----------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The effective configuration, in the family the client speaks."""
        turn = (
            {
                "type": "server_vad",
                "threshold": self.threshold,
                "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_ms,
            }
            if self.vad
            else None
        )
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt}
        if self.beta:
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": turn,
            }
        return {
            "type": "transcription",
            "id": self.id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.rate},
                    "transcription": transcription,
                    "turn_detection": turn,
                    "noise_reduction": {"type": "near_field"} if self.near_field else None,
                }
            },
        }

    def session_event(self, kind: str) -> dict[str, Any]:
        """``session.created``/``updated`` (or ``transcription_session.*`` for beta clients)."""
        family = "transcription_session" if self.beta else "session"
        return event(f"{family}.{kind}", session=self.describe())


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(exc: ProtocolError) -> dict[str, Any]:
    return event(
        "error",
        error={
            "type": "invalid_request_error" if exc.code != "server_error" else "server_error",
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "event_id": exc.event_id,
        },
    )


__all__ = [
    "CLIENT_EVENTS",
    "RATES",
    "ProtocolError",
    "SessionConfig",
    "error_event",
    "event",
    "new_id",
]
