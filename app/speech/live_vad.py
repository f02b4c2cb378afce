"""Speech probability per 32 ms frame, for live audio: Silero VAD (the ONNX model
faster-whisper ships, run by onnxruntime; no torch in the Ingress)."""

from __future__ import annotations

import numpy as np

from app.speech.streaming import FRAME


class SileroFrames:
    """``probabilities(frames)`` → one speech probability per 512-sample 16 kHz frame.

    faster-whisper's Silero model scores a batch of frames in one call (each with the
    previous frame's last 64 samples as context); a session keeps its own last frame so
    its first new frame gets the right context too.
    """

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._model = get_vad_model()  # cached per process: shared by every session
        self._last = np.zeros(FRAME, np.float32)

    def probabilities(self, frames: list[np.ndarray]) -> list[float]:
        if not frames:
            return []
        audio = np.concatenate([self._last, *frames]).astype(np.float32)
        self._last = frames[-1].copy()
        out = self._model(audio, num_samples=FRAME)
        return [float(p) for p in np.asarray(out).reshape(-1)[1:]]
