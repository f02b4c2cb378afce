"""Diarization error rate (DER), the NIST md-eval definition, for bench/ and tests.

A small frame-based implementation instead of ``pyannote.metrics`` (which would pull
pyannote.core, pandas and sympy into the image for one number). Frames of 10 ms;
a ``collar`` (seconds) around every reference turn boundary is not scored, as in
md-eval's ``-c``; overlapped speech is scored unless ``skip_overlap``. Hypothesis
labels are mapped to reference labels one-to-one to maximise agreement (Hungarian assignment).

    DER = (missed speech + false alarm + speaker confusion) / total reference speech
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Turn", "DERResult", "der", "read_rttm", "to_rttm"]

STEP = 0.01  # seconds per frame

Turn = tuple[float, float, str]  # (start, end, speaker)


@dataclass(frozen=True)
class DERResult:
    der: float
    missed: float  # seconds
    false_alarm: float
    confusion: float
    total: float  # scored reference speech, seconds
    mapping: dict[str, str]  # hypothesis label -> reference label

    def as_dict(self) -> dict:
        return {
            "der": round(self.der, 4),
            "missed_s": round(self.missed, 3),
            "false_alarm_s": round(self.false_alarm, 3),
            "confusion_s": round(self.confusion, 3),
            "scored_s": round(self.total, 3),
        }


def read_rttm(text: str, uri: str | None = None) -> list[Turn]:
    """``SPEAKER uri chan start dur <NA> <NA> name ...`` lines; optionally one ``uri`` only."""
    turns: list[Turn] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8 or parts[0] != "SPEAKER":
            continue
        if uri is not None and parts[1] != uri:
            continue
        start, dur = float(parts[3]), float(parts[4])
        turns.append((start, start + dur, parts[7]))
    return turns


def to_rttm(turns: Iterable[Turn], uri: str) -> str:
    return "".join(
        f"SPEAKER {uri} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n" for s, e, spk in turns
    )


def _activity(turns: list[Turn], labels: list[str], n: int) -> np.ndarray:
    act = np.zeros((len(labels), n), dtype=bool)
    index = {lab: i for i, lab in enumerate(labels)}
    for s, e, spk in turns:
        a, b = int(round(s / STEP)), int(round(e / STEP))
        act[index[spk], max(a, 0) : min(b, n)] = True
    return act


def der(
    reference: list[Turn],
    hypothesis: list[Turn],
    collar: float = 0.25,
    skip_overlap: bool = False,
) -> DERResult:
    """Score ``hypothesis`` against ``reference`` (both lists of (start, end, label)).

    ``skip_overlap``: leave out the frames where the reference has two or more
    speakers (md-eval's ``-1``), the "DER without overlap" papers also report.
    """
    from scipy.optimize import linear_sum_assignment

    end = max([e for _, e, _ in reference] + [e for _, e, _ in hypothesis] + [0.0])
    n = int(np.ceil(end / STEP)) + 1
    ref_labels = sorted({t[2] for t in reference})
    hyp_labels = sorted({t[2] for t in hypothesis})
    ref = _activity(reference, ref_labels, n)
    hyp = _activity(hypothesis, hyp_labels, n)

    scored = np.ones(n, dtype=bool)
    c = int(round(collar / STEP))
    if c > 0:
        for s, e, _ in reference:
            for edge in (int(round(s / STEP)), int(round(e / STEP))):
                scored[max(edge - c, 0) : min(edge + c, n)] = False
    if skip_overlap:
        scored &= ref.sum(axis=0) < 2
    ref, hyp = ref[:, scored], hyp[:, scored]

    mapping: dict[str, str] = {}
    correct = np.zeros(ref.shape[1], dtype=np.int64)
    if ref_labels and hyp_labels:
        overlap = hyp.astype(np.int64) @ ref.T.astype(np.int64)  # hyp x ref frames in common
        rows, cols = linear_sum_assignment(-overlap)
        for r, col in zip(rows, cols, strict=True):
            if overlap[r, col] > 0:
                mapping[hyp_labels[r]] = ref_labels[col]
                correct += hyp[r] & ref[col]
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    missed = np.maximum(n_ref - n_hyp, 0).sum() * STEP
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum() * STEP
    confusion = (np.minimum(n_ref, n_hyp) - correct).sum() * STEP
    total = n_ref.sum() * STEP
    value = (missed + false_alarm + confusion) / total if total > 0 else 0.0
    return DERResult(float(value), missed, false_alarm, confusion, total, mapping)
