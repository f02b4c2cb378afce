"""Covering redacted spans of audio: silence, or a 1 kHz tone (the broadcast "bleep").

Works on decoded mono samples (float32 in [-1, 1]); the task layer decodes and stores.
Spans are padded a little on each side (word timestamps are approximate), merged when
they touch, and clipped to the audio.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import numpy as np

#: Seconds added before and after each span: Whisper's word times drift by tens of ms.
PAD_S = 0.15
TONE_HZ = 1000.0
TONE_LEVEL = 0.1


class Cover(StrEnum):
    SILENCE = "silence"
    TONE = "tone"


def merge_spans(
    spans: Iterable[tuple[float, float]], duration_s: float, pad_s: float = PAD_S
) -> list[tuple[float, float]]:
    """Padded, clipped, merged ``(start, end)`` seconds in order."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted((max(0.0, s - pad_s), min(duration_s, e + pad_s)) for s, e in spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def cover_spans(
    samples: np.ndarray,
    sample_rate: int,
    spans: Iterable[tuple[float, float]],
    cover: Cover = Cover.TONE,
    pad_s: float = PAD_S,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A copy of ``samples`` with each span silent or toned, and the spans as covered."""
    out = np.array(samples, dtype=np.float32, copy=True)
    covered = merge_spans(spans, len(out) / sample_rate, pad_s)
    for start, end in covered:
        a, b = int(start * sample_rate), int(np.ceil(end * sample_rate))
        if cover == Cover.TONE:
            t = np.arange(b - a, dtype=np.float32) / sample_rate
            out[a:b] = TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)
        else:
            out[a:b] = 0.0
    return out, covered


__all__ = ["Cover", "PAD_S", "cover_spans", "merge_spans"]
