"""Live transcription policy: VAD-cut utterances, and a local-agreement rule on their tail.

Pure logic, no I/O and no model: the realtime API feeds audio in, asks for a VAD
probability per 32 ms frame (:data:`FRAME`), and decodes what this module says to
decode. Two pieces:

- :class:`UtteranceCutter` turns 16 kHz mono audio and per-frame speech
  probabilities into utterances: speech starts above ``threshold`` (with
  ``prefix_padding_ms`` of audio before it), stops after ``silence_ms`` below
  ``threshold - 0.15``, and is cut at ``max_utterance_s`` even without a pause, so
  the buffer per session is bounded.
- :class:`LocalAgreement` commits a word only when two consecutive decodes of the
  growing utterance agree on it (LocalAgreement-2, as in whisper_streaming); a
  committed word never changes, and the final decode only appends after them.
"""

from __future__ import annotations

import io
import re
import wave
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
#: Samples per VAD frame (Silero at 16 kHz): 32 ms.
FRAME = 512
#: Samples of the closing pause kept with an utterance (200 ms).
KEEP = SAMPLE_RATE // 5
#: Frames of pause after which the utterance's final audio is known (KEEP, rounded up).
PAUSE_FRAMES = -(-KEEP // FRAME)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian 16-bit mono PCM → float32 in [-1, 1] (an odd trailing byte is dropped)."""
    if len(data) % 2:
        data = data[:-1]
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class Resampler:
    """Streaming resampling to 16 kHz, chunk by chunk, without seams between chunks.

    A polyphase filter run on each chunk alone would bend the chunk's edges (every
    100 ms: audible to the model). Each call filters with ``PAD`` samples of the previous
    chunk before it, and holds the last ``PAD`` samples back until the next chunk
    gives them a right-hand context (so 2.5 ms at 24 kHz lag behind, and the last 2.5 ms
    of a session are never emitted).
    """

    PAD = 60  # input samples; a multiple of 3, longer than the filter's half-length

    def __init__(self, rate: int) -> None:
        self.rate = rate
        g = int(np.gcd(SAMPLE_RATE, rate))
        self.up, self.down = SAMPLE_RATE // g, rate // g
        self.pad = self.PAD // self.down * self.down
        self._buf = np.zeros(self.pad, np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if self.up == self.down:
            return audio
        from scipy.signal import resample_poly

        buf = np.concatenate([self._buf, audio])
        emit = (buf.shape[0] - 2 * self.pad) // self.down * self.down
        if emit <= 0:
            self._buf = buf
            return np.zeros(0, np.float32)
        out = resample_poly(buf[: 2 * self.pad + emit], self.up, self.down)
        first = self.pad * self.up // self.down
        self._buf = buf[emit:]
        return out[first : first + emit * self.up // self.down].astype(np.float32)


def float_to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_bytes(pcm16: bytes, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM → a WAV file's bytes (what the Transcriber and a task take)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return buf.getvalue()


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_ms: int = 500
    max_utterance_s: float = 15.0


@dataclass(frozen=True)
class SpeechStarted:
    start_ms: int


@dataclass(frozen=True)
class Pause:
    """Speech paused long enough that, if the pause lasts, the utterance will be exactly
    this audio: a decode can start now, before the end is certain (if speech resumes,
    the decode is one more look at the utterance so far)."""

    start_ms: int
    end_ms: int
    audio: np.ndarray


@dataclass(frozen=True)
class Utterance:
    """A finished utterance: its audio (16 kHz float32, with up to 200 ms of the pause after
    it) and where its speech lies in the session (``end_ms``: where the speech stopped)."""

    start_ms: int
    end_ms: int
    audio: np.ndarray
    #: ``"silence"`` (a pause), ``"max_length"`` (cut without one) or ``"commit"`` (the client).
    reason: str


@dataclass
class UtteranceCutter:
    """Cuts the session's audio into utterances by per-frame speech probability."""

    config: VadConfig = field(default_factory=VadConfig)
    #: Session samples seen so far (all audio, speech or not).
    position: int = 0
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _chunks: list[np.ndarray] = field(default_factory=list)
    _start: int | None = None
    _silent_frames: int = 0
    _pre: list[np.ndarray] = field(default_factory=list)

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        """Split new audio into whole VAD frames; the remainder waits for the next call."""
        buf = np.concatenate([self._pending, audio]) if self._pending.size else audio
        whole = buf.shape[0] // FRAME * FRAME
        self._pending = buf[whole:].copy()
        return [buf[i : i + FRAME] for i in range(0, whole, FRAME)]

    def speech_audio(self) -> np.ndarray:
        """The current utterance so far (empty outside speech)."""
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def speech_samples(self) -> int:
        return sum(c.shape[0] for c in self._chunks)

    def push(self, frame: np.ndarray, prob: float) -> list[SpeechStarted | Pause | Utterance]:
        """One frame and its speech probability → the events it causes."""
        cfg = self.config
        events: list[SpeechStarted | Pause | Utterance] = []
        frame_ms = FRAME * 1000 // SAMPLE_RATE
        if self._start is None:
            self._pre.append(frame)
            keep = max(1, cfg.prefix_padding_ms // frame_ms)
            del self._pre[:-keep]
            if prob >= cfg.threshold:
                pre = sum(p.shape[0] for p in self._pre) - frame.shape[0]
                self._start = self.position - pre
                self._chunks = list(self._pre)
                self._pre = []
                self._silent_frames = 0
                events.append(SpeechStarted(self._ms(self._start)))
        else:
            self._chunks.append(frame)
            if prob < cfg.threshold - 0.15:
                self._silent_frames += 1
            else:
                self._silent_frames = 0
            if self._silent_frames * frame_ms >= cfg.silence_ms:
                events.append(self._finish("silence"))
            elif self._silent_frames == PAUSE_FRAMES:
                # The audio an end here would have is complete: it can be decoded now.
                audio, end = self._trimmed()
                events.append(Pause(self._ms(self._start), self._ms(end), audio))
            elif self.speech_samples() >= cfg.max_utterance_s * SAMPLE_RATE:
                events.append(self._finish("max_length"))
        self.position += frame.shape[0]
        return events

    def commit(self) -> Utterance | None:
        """The client committed: the utterance so far ends now (``None`` outside speech)."""
        if self._start is None:
            return None
        return self._finish("commit")

    def clear(self) -> None:
        """Drop the utterance in progress (``input_audio_buffer.clear``)."""
        self._start = None
        self._chunks = []
        self._pre = []
        self._silent_frames = 0

    def _trimmed(self) -> tuple[np.ndarray, int]:
        """The utterance's audio as it would end now, and the sample where its speech stopped.

        The pause that ends it is not speech, but ~200 ms of it (:data:`KEEP`) helps the
        last word decode; more is dropped.
        """
        assert self._start is not None
        audio = self.speech_audio()
        silent = min(self._silent_frames * FRAME, audio.shape[0])
        keep = min(silent, KEEP)
        audio = audio[: audio.shape[0] - silent + keep]
        return audio, self._start + audio.shape[0] - keep

    def _finish(self, reason: str) -> Utterance:
        assert self._start is not None
        audio, end = self._trimmed()
        utt = Utterance(self._ms(self._start), self._ms(end), audio, reason)
        self.clear()
        return utt

    @staticmethod
    def _ms(samples: int) -> int:
        return int(samples * 1000 // SAMPLE_RATE)


_WORD_KEY = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    """Words compare without case or punctuation ("Country," agrees with "country")."""
    return _WORD_KEY.sub("", word.lower())


def words_of(text: str) -> list[str]:
    return text.split()


@dataclass
class LocalAgreement:
    """Commit the words two consecutive hypotheses agree on; committed words never change."""

    committed: list[str] = field(default_factory=list)
    _previous: list[str] | None = None

    def update(self, hypothesis: list[str]) -> list[str]:
        """A new decode of the whole utterance so far → the words newly committed."""
        previous, self._previous = self._previous, hypothesis
        if previous is None:
            return []
        n = 0
        for a, b in zip(previous, hypothesis, strict=False):
            if _key(a) != _key(b):
                break
            n += 1
        if n <= len(self.committed):
            return []
        if [_key(w) for w in hypothesis[: len(self.committed)]] != [
            _key(w) for w in self.committed
        ]:
            return []  # the hypothesis rewrote committed words: wait for it to settle
        new = hypothesis[len(self.committed) : n]
        self.committed += new
        return new

    def finish(self, final: list[str]) -> list[str]:
        """The last decode → the words after the committed ones (the tail to append).

        The committed words stay as they are; the final hypothesis is aligned on them by
        the longest run of its words that matches their end.
        """
        start = _align(self.committed, final)
        tail = final[start:]
        self.committed += tail
        return tail

    @property
    def text(self) -> str:
        return " ".join(self.committed)


def _align(committed: list[str], final: list[str]) -> int:
    """Where ``final`` continues after ``committed``: just past the last committed word found
    in it (searched near the committed length), else at the committed length."""
    if not committed:
        return 0
    keys = [_key(w) for w in final]
    last = _key(committed[-1])
    n = len(committed)
    for offset in (0, -1, 1, -2, 2):
        i = n - 1 + offset
        if 0 <= i < len(keys) and keys[i] == last:
            return i + 1
    return min(n, len(final))


__all__ = [
    "FRAME",
    "SAMPLE_RATE",
    "LocalAgreement",
    "Pause",
    "Resampler",
    "SpeechStarted",
    "Utterance",
    "UtteranceCutter",
    "VadConfig",
    "float_to_pcm16",
    "pcm16_to_float",
    "wav_bytes",
    "words_of",
]
