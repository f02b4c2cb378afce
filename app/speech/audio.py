"""Probe and decode uploaded audio with PyAV (FFmpeg), with errors a client can act on.

``probe`` reads only the container header, so a tiny file that claims hours is
refused before anything is decoded. ``decode`` resamples any codec and channel
layout to the 16 kHz mono float32 that Whisper wants.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Bad audio; ``code`` and ``status_code`` go straight into the HTTP error."""

    def __init__(self, code: str, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code

    def __reduce__(self):  # keep code/message when Ray ships the error between processes
        return (AudioError, (self.code, self.message, self.status_code))


@dataclass(frozen=True)
class AudioInfo:
    format: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


def _open(data: bytes) -> av.container.InputContainer:
    if not data:
        raise AudioError("empty_file", "the uploaded file is empty (0 bytes)")
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioError(
            "unsupported_media", f"the file is not audio that FFmpeg can read ({exc})"
        ) from None


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise AudioError("unsupported_media", "the file has no audio stream")
    return container.streams.audio[0]


def _header_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe(data: bytes, max_duration_s: float | None = None) -> AudioInfo:
    """Read the header only; refuse audio whose declared length is over the limit."""
    container = _open(data)
    try:
        stream = _audio_stream(container)
        ctx = stream.codec_context
        info = AudioInfo(
            format=container.format.name,
            codec=ctx.name,
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            duration_s=_header_duration(container, stream),
        )
    finally:
        container.close()
    if max_duration_s is not None and info.duration_s and info.duration_s > max_duration_s:
        raise AudioError(
            "audio_too_long",
            f"the audio lasts {info.duration_s / 60:.1f} min; the limit is "
            f"{max_duration_s / 60:.1f} min",
            status_code=413,
        )
    return info


def decode(data: bytes, max_duration_s: float | None = None) -> np.ndarray:
    """Decode to 16 kHz mono float32, refusing corrupt, truncated or over-long audio."""
    container = _open(data)
    try:
        stream = _audio_stream(container)
        declared = _header_duration(container, stream)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        samples = 0
        limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
        errors = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    errors += 1
                    if errors > 50:
                        break
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        arr = out.to_ndarray().reshape(-1)
                        chunks.append(arr)
                        samples += arr.shape[0]
                if limit is not None and samples > limit:
                    raise AudioError(
                        "audio_too_long",
                        f"the audio is longer than the limit of {max_duration_s / 60:.1f} min",
                        status_code=413,
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            if not chunks:
                raise AudioError("audio_decode_failed", f"the audio is corrupt ({exc})") from None
            errors += 1
    finally:
        container.close()
    if not chunks:
        raise AudioError("audio_decode_failed", "no audio could be decoded from the file")
    pcm = np.concatenate(chunks).astype(np.float32) / 32768.0
    got_s = pcm.shape[0] / SAMPLE_RATE
    # A header that promises far more than the data holds means a truncated upload.
    if declared and declared > 2.0 and got_s < 0.5 * declared:
        raise AudioError(
            "audio_truncated",
            f"the file declares {declared:.1f} s of audio but only {got_s:.1f} s could be decoded",
        )
    return pcm
