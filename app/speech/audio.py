"""Probe and decode uploaded audio with PyAV (FFmpeg), with errors a client can act on.

``probe`` reads only the container header, so a tiny file that claims hours is
refused before anything is decoded. Headers lie (a FLAC with an unknown length,
an MP3 without a frame count), so ``measure`` walks the packets without decoding
them and stops as soon as the real length passes the limit, and ``decode`` stops
at the limit too: no more than the capped audio is ever held in memory.
``decode`` resamples any codec and channel layout to the 16 kHz mono float32
that Whisper wants.

Errors are domain errors (:class:`AudioError` and its subclass
:class:`AudioTooLong`); ``app/api/errors.py`` decides what HTTP status they get.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Bad audio; ``code`` names the problem for the client (``unsupported_media``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # keep code/message when Ray ships the error between processes
        return (type(self), (self.code, self.message))


class AudioTooLong(AudioError):
    """The audio lasts longer than the limit (from its header, its packets or its samples)."""


def too_long(max_duration_s: float, lasts_s: float | None = None) -> AudioTooLong:
    """The error for audio over ``max_duration_s``; names the length when it is known."""
    limit_min = f"{max_duration_s / 60:.1f} min"
    if lasts_s is None:
        message = f"the audio is longer than the limit of {limit_min}"
    else:
        message = f"the audio lasts {lasts_s / 60:.1f} min; the limit is {limit_min}"
    return AudioTooLong("audio_too_long", message)


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
        raise too_long(max_duration_s, info.duration_s)
    return info


def measure(data: bytes, max_duration_s: float | None = None) -> float:
    """The audio's real length in seconds, from its packets, refusing it past the limit.

    The header is checked first (cheap), then packets are walked without decoding
    them; the walk stops at the first packet past ``max_duration_s``. Packets
    without timing (rare) fall back to decoding frames and counting their samples,
    which are dropped at once. Either way nothing is kept in memory.
    """
    probe(data, max_duration_s)
    container = _open(data)
    try:
        stream = _audio_stream(container)
        seconds = _packet_seconds(container, stream, max_duration_s)
        if seconds is None:
            try:
                container.seek(0)
                seconds = _sample_seconds(container, stream, max_duration_s)
            except av.FFmpegError as exc:  # nothing with timing, and no frames either
                raise AudioError("audio_decode_failed", f"the audio is corrupt ({exc})") from None
    finally:
        container.close()
    return seconds


def _packet_seconds(container, stream, max_duration_s: float | None) -> float | None:
    """Sum of packet durations (or the last packet's end); ``None`` if packets carry no timing."""
    total = 0.0
    end = 0.0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's final flush packet
                continue
            base = packet.time_base or stream.time_base
            if base is None:
                return None
            if packet.duration:
                total += float(packet.duration * base)
                if packet.pts is not None:
                    end = max(end, float((packet.pts + packet.duration) * base))
            elif packet.pts is not None:
                end = max(end, float(packet.pts * base))
            else:
                return None
            if max_duration_s is not None and max(total, end) > max_duration_s:
                raise too_long(max_duration_s)
    except av.FFmpegError:
        pass  # a damaged tail: what was read so far is the length; decode() judges the rest
    seconds = max(total, end)
    return seconds if seconds > 0 else None


def _sample_seconds(container, stream, max_duration_s: float | None) -> float:
    samples = 0.0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue
        for frame in frames:
            samples += frame.samples / float(frame.sample_rate or SAMPLE_RATE)
            if max_duration_s is not None and samples > max_duration_s:
                raise too_long(max_duration_s)
    return samples


def decode(data: bytes, max_duration_s: float | None = None) -> np.ndarray:
    """Decode to 16 kHz mono float32, refusing corrupt, truncated or over-long audio.

    The cap holds during decoding: the first frame past ``max_duration_s`` stops it,
    so at most the capped length of PCM is ever in memory, whatever the header says.
    """
    container = _open(data)
    try:
        stream = _audio_stream(container)
        declared = _header_duration(container, stream)
        if max_duration_s is not None and declared and declared > max_duration_s:
            raise too_long(max_duration_s, declared)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        samples = 0
        limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None

        def take(frames) -> None:
            nonlocal samples
            for out in frames:
                arr = out.to_ndarray().reshape(-1)
                samples += arr.shape[0]
                if limit is not None and samples > limit:
                    chunks.clear()
                    raise too_long(max_duration_s)
                chunks.append(arr)

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
                    take(resampler.resample(frame))
            take(resampler.resample(None))
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
