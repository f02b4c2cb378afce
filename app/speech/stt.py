"""Speech to text with faster-whisper: the one wrapper the deployment, batch and bench share."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from app.speech.audio import SAMPLE_RATE, decode
from app.core.model_assets import ModelError, resolve_stt_model
from app.core.schemas import Segment, TranscribeOutput, Transcript, Word
from app.core.settings import Settings


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
    ) -> None:
        from faster_whisper import WhisperModel

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
        )

    def transcribe_pcm(
        self, pcm: np.ndarray, options: SttOptions | None = None, on_progress=None
    ) -> Transcript:
        """Transcribe 16 kHz mono float32; ``on_progress(done_s, total_s)`` per segment."""
        opts = options or SttOptions()
        language = opts.language
        if language and not self.multilingual and language != "en":
            language = None  # an English-only model ignores other languages rather than failing
        kwargs = dict(
            language=language,
            beam_size=self.beam_size,
            vad_filter=self.vad,
            initial_prompt=opts.initial_prompt,
            word_timestamps=opts.word_timestamps,
            condition_on_previous_text=False,
        )
        if opts.temperature is not None:
            kwargs["temperature"] = opts.temperature
        segments_iter, info = self.model.transcribe(pcm, **kwargs)
        duration = pcm.shape[0] / SAMPLE_RATE
        segments: list[Segment] = []
        for i, seg in enumerate(segments_iter):
            words = None
            if opts.word_timestamps and seg.words:
                words = [
                    Word(
                        start=round(w.start, 3),
                        end=round(w.end, 3),
                        word=w.word,
                        probability=round(w.probability, 4),
                    )
                    for w in seg.words
                ]
            segments.append(
                Segment(
                    id=i,
                    start=round(seg.start, 3),
                    end=round(seg.end, 3),
                    text=seg.text.strip(),
                    words=words,
                    seek=seg.seek,
                    tokens=list(seg.tokens),
                    temperature=seg.temperature,
                    avg_logprob=round(seg.avg_logprob, 4),
                    compression_ratio=round(seg.compression_ratio, 4),
                    no_speech_prob=round(seg.no_speech_prob, 4),
                )
            )
            if on_progress is not None:
                on_progress(min(seg.end, duration), duration)
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcript(
            text=text,
            language=info.language if segments or self.multilingual else (language or "en"),
            language_probability=round(float(info.language_probability), 4),
            duration_s=round(duration, 3),
            segments=segments,
        )

    def transcribe_bytes(
        self,
        data: bytes,
        options: SttOptions | None = None,
        max_duration_s: float | None = None,
        on_progress=None,
    ) -> TranscribeOutput:
        t0 = time.perf_counter()
        pcm = decode(data, max_duration_s=max_duration_s)
        t1 = time.perf_counter()
        transcript = self.transcribe_pcm(pcm, options, on_progress=on_progress)
        t2 = time.perf_counter()
        return TranscribeOutput(
            transcript=transcript,
            decode_s=round(t1 - t0, 4),
            transcribe_s=round(t2 - t1, 4),
            model=self.model_name,
        )
