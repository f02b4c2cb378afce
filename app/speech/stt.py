"""Speech to text with faster-whisper: the one wrapper the deployment, batch and bench share.

On a GPU the decoder runs batched (faster-whisper's ``BatchedInferencePipeline``):
speech chunks, from one file or from several (:meth:`SpeechToText.transcribe_many`),
share each forward pass. On CPU the sequential decoder stays, because it is faster
there (bench/stt_batching.py, docs/benchmarks.md).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.core.model_assets import ModelError, resolve_stt_model
from app.core.schemas import Segment, TranscribeOutput, Transcript, Word
from app.core.settings import Settings
from app.speech.audio import SAMPLE_RATE, decode


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:
        return False


@dataclass
class SttOptions:
    language: str | None = None
    initial_prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    extra: dict = field(default_factory=dict)
    #: Detection picks among these only (ISO-639-1 codes); None: any language.
    languages: list[str] | None = None
    #: ``translate``: Whisper's speech-to-English task (multilingual models only).
    task: str = "transcribe"
    #: Detect the language per 30 s window (code-switching) instead of once.
    multilingual: bool = False


class SpeechToText:
    def __init__(
        self,
        model_path: str,
        model_name: str,
        device: str = "auto",
        compute_type: str = "default",
        beam_size: int = 1,
        vad: bool = True,
        cpu_threads: int = 0,
        batch_size: int = 8,
        batched: bool | None = None,
    ) -> None:
        """``batched``: None picks the batched pipeline on CUDA only (measured fastest)."""
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        if compute_type == "default":
            compute_type = "float16" if device == "cuda" else "int8"
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.vad = vad
        self.model_name = model_name
        if device == "cpu" and cpu_threads == 0:
            # "0 = all cores": Ray sets OMP_NUM_THREADS to the replica's num_cpus, which
            # would otherwise pin Whisper to one thread inside a Serve replica.
            cpu_threads = os.cpu_count() or 1
        try:
            self.model = WhisperModel(
                model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
            )
        except Exception as exc:  # corrupt files, wrong format, no network for a hub id
            raise ModelError(
                "AIPP_STT_MODEL", f"cannot load Whisper model '{model_path}': {exc}"
            ) from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        self.batch_size = batch_size
        use_batched = device == "cuda" if batched is None else batched
        self.batched = BatchedInferencePipeline(self.model) if use_batched else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SpeechToText:
        resolved = resolve_stt_model(settings.stt_model, settings.cache_dir)
        return cls(
            resolved.path,
            resolved.name,
            device=settings.stt_device,
            compute_type=settings.stt_compute_type,
            beam_size=settings.stt_beam_size,
            vad=settings.stt_vad,
            cpu_threads=settings.stt_cpu_threads,
            batch_size=settings.stt_batch_size,
        )

    @property
    def batching(self) -> bool:
        """True on the batched pipeline (GPU): concurrent files can share one pass."""
        return self.batched is not None

    def info(self) -> dict:
        """What the Transcriber reports (``/readyz``, ``/v1/models``, the cache key)."""
        return {
            "model": self.model_name,
            "device": self.device,
            "compute_type": self.compute_type,
            "multilingual": self.multilingual,
            "batched": self.batching,
            "batch_size": self.batch_size,
        }

    def transcribe_pcm(
        self, pcm: np.ndarray, options: SttOptions | None = None, on_progress=None
    ) -> Transcript:
        """Transcribe 16 kHz mono float32; ``on_progress(done_s, total_s)`` per segment."""
        opts = options or SttOptions()
        if self.batched is not None:
            return self.transcribe_many([pcm], opts, on_progress=on_progress)[0]
        language = self._language(opts)
        kwargs = dict(
            language=language,
            beam_size=self.beam_size,
            vad_filter=self.vad,
            initial_prompt=opts.initial_prompt,
            word_timestamps=opts.word_timestamps,
            condition_on_previous_text=False,
            task=opts.task if self.multilingual else "transcribe",
            multilingual=opts.multilingual and self.multilingual,
        )
        if opts.temperature is not None:
            kwargs["temperature"] = opts.temperature
        segments_iter, info = self.model.transcribe(pcm, **kwargs)
        duration = pcm.shape[0] / SAMPLE_RATE
        segments: list[Segment] = []
        for i, seg in enumerate(segments_iter):
            segments.append(_segment(i, seg, 0.0, opts.word_timestamps))
            if on_progress is not None:
                on_progress(min(seg.end, duration), duration)
        if self.multilingual:
            segments = self._fill_gaps(pcm, segments, kwargs, opts.word_timestamps)
        return self._transcript(segments, info, language, duration)

    def _fill_gaps(
        self, pcm: np.ndarray, segments: list[Segment], kwargs: dict, word_timestamps: bool
    ) -> list[Segment]:
        """``segments`` with each stretch of speech they left out decoded on its own.

        Whisper can end a 30 s window after its first line (a lone timestamp token) and
        seek past the rest: on multilingual.mp3 the multilingual model wrote nothing for
        the 27 s of German after the English, with the language detected per window or
        forced to German (seen on an AVX-512 CPU; earlier machines wrote it). Each
        stretch of speech left without a segment
        (:func:`~app.speech.languages.unwritten_speech`) is decoded again; pauses cost
        one VAD pass.
        """
        from app.speech.languages import unwritten_speech

        added: list[Segment] = []
        for start, end in unwritten_speech(segments, pcm):
            pieces, _ = self.model.transcribe(pcm[start:end], **kwargs)
            offset = -start / SAMPLE_RATE
            added += [_segment(0, p, offset, word_timestamps) for p in pieces if p.text.strip()]
        if not added:
            return segments
        ordered = sorted(segments + added, key=lambda seg: seg.start)
        return [seg.model_copy(update={"id": i}) for i, seg in enumerate(ordered)]

    def _language(self, opts: SttOptions) -> str | None:
        language = opts.language
        if language and not self.multilingual and language != "en":
            language = None  # an English-only model ignores other languages rather than failing
        return language

    def _transcript(self, segments: list[Segment], info, language, duration: float) -> Transcript:
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcript(
            text=text,
            language=info.language if segments or self.multilingual else (language or "en"),
            language_probability=round(float(info.language_probability), 4),
            duration_s=round(duration, 3),
            segments=segments,
        )

    def can_share_batch(self, options: SttOptions) -> bool:
        """Files batch together only when one language applies to all of them: a
        multilingual model detecting the language would detect one for the batch."""
        return bool(self._language(options)) or not self.multilingual

    def transcribe_many(
        self, pcms: list[np.ndarray], options: SttOptions | None = None, on_progress=None
    ) -> list[Transcript]:
        """Several recordings in one batched pass: their speech chunks share GPU batches.

        The recordings are laid end to end and their VAD speech regions (at most
        30 s each, Whisper's window) are handed to the batched pipeline as
        ``clip_timestamps``; segments are mapped back to their recording by time.
        All recordings share ``options`` (see :meth:`can_share_batch`). Without the
        batched pipeline (CPU) they are transcribed one after another.
        """
        opts = options or SttOptions()
        if self.batched is None:
            return [self.transcribe_pcm(p, opts, on_progress=on_progress) for p in pcms]
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if len(pcms) > 1 and not self.can_share_batch(opts):
            return [self.transcribe_many([p], opts, on_progress)[0] for p in pcms]
        language = self._language(opts)
        rate = SAMPLE_RATE
        window = 30 * rate
        starts, clips, offset = [], [], 0
        for pcm in pcms:
            starts.append(offset)
            n = int(pcm.shape[0])
            if self.vad:
                vad = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
                regions = get_speech_timestamps(pcm, vad)
            else:
                regions = [{"start": a, "end": min(a + window, n)} for a in range(0, n, window)]
            clips += [
                {"start": (offset + a) / rate, "end": (offset + b) / rate}
                for a, b in _windows(regions, window)
            ]
            offset += n
        durations = [p.shape[0] / SAMPLE_RATE for p in pcms]
        per_file: list[list[Segment]] = [[] for _ in pcms]
        info = None
        if clips:
            audio = np.concatenate(pcms).astype(np.float32, copy=False)
            kwargs = dict(
                language=language,
                beam_size=self.beam_size,
                initial_prompt=opts.initial_prompt,
                word_timestamps=opts.word_timestamps,
                clip_timestamps=clips,
                batch_size=self.batch_size,
                task=opts.task if self.multilingual else "transcribe",
                multilingual=opts.multilingual and self.multilingual,
            )
            if opts.temperature is not None:
                kwargs["temperature"] = opts.temperature
            segments_iter, info = self.batched.transcribe(audio, **kwargs)
            bounds = [s / SAMPLE_RATE for s in starts]
            for seg in segments_iter:
                owner = max(0, bisect.bisect_right(bounds, seg.start) - 1)
                found = per_file[owner]
                found.append(_segment(len(found), seg, bounds[owner], opts.word_timestamps))
                if on_progress is not None and len(pcms) == 1:
                    on_progress(min(seg.end, durations[0]), durations[0])
        if info is None:  # no speech anywhere: nothing was decoded
            info = _NoSpeech(language or "en")
        return [
            self._transcript(segs, info, language, dur)
            for segs, dur in zip(per_file, durations, strict=True)
        ]

    def transcribe_bytes_many(
        self, items: list[bytes], options: SttOptions, max_duration_s: float | None = None
    ) -> list[TranscribeOutput | Exception]:
        """:meth:`transcribe_many` from encoded audio; a file that fails to decode gets
        its exception in its place, the others are still transcribed."""
        t0 = time.perf_counter()
        decoded: list[np.ndarray | Exception] = []
        for data in items:
            try:
                decoded.append(decode(data, max_duration_s=max_duration_s))
            except Exception as exc:  # one bad upload must not fail the batch
                decoded.append(exc)
        t1 = time.perf_counter()
        good = [p for p in decoded if not isinstance(p, Exception)]
        transcripts = iter(self.transcribe_many(good, options) if good else [])
        t2 = time.perf_counter()
        share = len(good) or 1
        return [
            p
            if isinstance(p, Exception)
            else TranscribeOutput(
                transcript=next(transcripts),
                decode_s=round((t1 - t0) / len(items), 4),
                transcribe_s=round((t2 - t1) / share, 4),
                model=self.model_name,
            )
            for p in decoded
        ]

    def transcribe_bytes(
        self,
        data: bytes,
        options: SttOptions | None = None,
        max_duration_s: float | None = None,
        on_progress=None,
    ) -> TranscribeOutput:
        def run(pcm: np.ndarray) -> tuple[Transcript, str]:
            return self.transcribe_pcm(pcm, options, on_progress=on_progress), self.model_name

        return timed_transcribe(data, max_duration_s, run)


def timed_transcribe(
    data: bytes, max_duration_s: float | None, run: Callable[[np.ndarray], tuple[Transcript, str]]
) -> TranscribeOutput:
    """Decode, then ``run`` (the transcript and the model that made it), timing each step."""
    t0 = time.perf_counter()
    pcm = decode(data, max_duration_s=max_duration_s)
    t1 = time.perf_counter()
    transcript, model = run(pcm)
    t2 = time.perf_counter()
    return TranscribeOutput(
        transcript=transcript,
        decode_s=round(t1 - t0, 4),
        transcribe_s=round(t2 - t1, 4),
        model=model,
    )


@dataclass
class _NoSpeech:
    """``TranscriptionInfo``'s two fields we read, for a batch with no speech at all."""

    language: str
    language_probability: float = 1.0


def speech_spans(pcm: np.ndarray, window_s: float = 30.0) -> list[tuple[int, int]]:
    """A recording's speech, as sample spans of at most ``window_s`` cut at pauses
    (the spans the batched pipeline decodes; streamed transcriptions decode them in turn)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(max_speech_duration_s=window_s, min_silence_duration_ms=160)
    return _windows(get_speech_timestamps(pcm, vad), int(window_s * SAMPLE_RATE))


def _windows(regions: list[dict], window: int) -> list[tuple[int, int]]:
    """Consecutive speech regions merged into spans of at most ``window`` samples.

    Whisper decodes a region better with the speech around it (a lone 0.5 s
    region loses its words), so regions are joined, with the pauses between
    them, up to Whisper's 30 s window; as faster-whisper's own batched
    pipeline does, but on the recording's clock (clip timestamps must be spans).
    """
    spans: list[tuple[int, int]] = []
    for r in regions:
        start, end = int(r["start"]), int(r["end"])
        if end <= start:
            continue
        if spans and end - spans[-1][0] <= window:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _segment(i: int, seg, offset_s: float, word_timestamps: bool) -> Segment:
    """A faster-whisper segment as ours; ``offset_s`` moves it onto its recording's clock."""
    words = None
    if word_timestamps and seg.words:
        words = [
            Word(
                start=round(w.start - offset_s, 3),
                end=round(w.end - offset_s, 3),
                word=w.word,
                probability=round(w.probability, 4),
            )
            for w in seg.words
        ]
    return Segment(
        id=i,
        start=round(seg.start - offset_s, 3),
        end=round(seg.end - offset_s, 3),
        text=seg.text.strip(),
        words=words,
        seek=seg.seek,
        tokens=list(seg.tokens),
        temperature=seg.temperature,
        avg_logprob=round(seg.avg_logprob, 4),
        compression_ratio=round(seg.compression_ratio, 4),
        no_speech_prob=round(seg.no_speech_prob, 4),
    )
