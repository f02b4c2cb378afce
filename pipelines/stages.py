"""The Ray Data stages of the batch job, each a plain function or class over Arrow batches.

Every stage keeps one row per file and never raises for a bad file: the row
gets ``error_code``/``error_message`` and later stages pass it through. Rows
travel with one schema (:data:`WORK_SCHEMA`), so Arrow never has to guess a
column's type from a batch that happens to hold only nulls.

- :func:`read_files` (task): fetch the bytes through fsspec, hash them, drop
  files an earlier run finished.
- :func:`decode_audio` (task): probe the header, decode to 16 kHz mono PCM.
- :class:`Transcribe` (actor): faster-whisper, one model per actor.
- :class:`Summarize` (actor): :class:`~app.llm.summarize.TranscriptSummarizer`
  on the engine the settings choose (llama.cpp on CPU), exactly as the service.
  The GPU alternative through ``ray.data.llm`` lives in
  :mod:`pipelines.summarize_vllm`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from app.speech.audio import SAMPLE_RATE, AudioError, decode, probe
from pipelines.results import RESULT_SCHEMA
from pipelines.sources import read_bytes

WORK_SCHEMA = (
    RESULT_SCHEMA.append(pa.field("audio", pa.large_binary()))
    .append(pa.field("pcm", pa.large_binary()))
    # --diarize (pipelines/diarize_stage.py): turns from Diarize to merge_speakers, and
    # the "Speaker N: ..." text the summarizer reads.
    .append(
        pa.field(
            "speaker_turns",
            pa.list_(
                pa.struct(
                    [("start", pa.float64()), ("end", pa.float64()), ("speaker", pa.string())]
                )
            ),
        )
    )
    .append(pa.field("speaker_text", pa.string()))
)
MAX_ERROR_CHARS = 2000


def to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


def fail(row: dict, code: str, message: str) -> dict:
    row["error_code"] = code
    row["error_message"] = str(message)[:MAX_ERROR_CHARS]
    row["audio"] = None
    row["pcm"] = None
    return row


# Statuses of rows no model has to see (the driver handles them):
REUSED = "reused"  # bytes an earlier run finished under another path: copy that result
UNCHANGED = "unchanged"  # same path, same bytes, new mtime/ETag: remember the new fingerprint


def passes_through(row: dict) -> bool:
    """Rows a stage leaves alone: failed ones, and those the driver completes itself."""
    return bool(row.get("error_code")) or row.get("status") in (REUSED, UNCHANGED)


def add_timing(row: dict, key: str, seconds: float) -> None:
    timings = dict(row.get("timings") or {})
    timings[key] = round(seconds, 4)
    row["timings"] = timings


def set_model(row: dict, key: str, name: str) -> None:
    models = dict(row.get("models") or {})
    models[key] = name
    row["models"] = models


def over_pcm(
    batch: pa.Table,
    step: Callable[[dict, np.ndarray], None],
    error_code: str,
    timing: str,
    keep_pcm: bool = False,
) -> pa.Table:
    """Run ``step(row, pcm)`` on each row's PCM (float32), timed; a failure fails that file.

    The one loop of the stages that read the decoded audio (Transcribe, Diarize):
    ``keep_pcm`` leaves the PCM in the row for a later stage, else it is dropped here.
    """
    out = []
    for row in batch.to_pylist():
        pcm16 = row.get("pcm")
        if not keep_pcm:
            row["pcm"] = None
        if passes_through(row) or pcm16 is None:
            out.append(row)
            continue
        t0 = time.perf_counter()
        pcm = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0
        try:
            step(row, pcm)
        except Exception as exc:  # one file, not the job
            out.append(fail(row, error_code, f"{type(exc).__name__}: {exc}"))
            continue
        add_timing(row, timing, time.perf_counter() - t0)
        out.append(row)
    return to_table(out)


# --- tasks ------------------------------------------------------------------------

_done_cache: dict[str, tuple[frozenset, frozenset]] = {}


def _done_sets(done_ref: list | None) -> tuple[frozenset, frozenset]:
    """(finished sha256s, finished (path, sha256) pairs), fetched once per worker process.

    The driver ``ray.put``s them once; shipping them inside every task's arguments
    would copy megabytes per file on a large bucket.
    """
    if not done_ref:
        return frozenset(), frozenset()
    import ray

    ref = done_ref[0]
    key = ref.hex()
    if key not in _done_cache:
        _done_cache.clear()
        _done_cache[key] = ray.get(ref)
    return _done_cache[key]


def read_files(
    batch: pa.Table, *, done_ref: list | None = None, storage_options: dict | None = None
) -> pa.Table:
    """Listing rows (path, size, fingerprint) -> rows with the file's bytes and sha256.

    A file whose sha256 an earlier run finished is not decoded again: under the same
    path it becomes an ``unchanged`` row (the driver records its new fingerprint, so
    the next run skips it without reading it); under a new path (a copy, a move) a
    ``reused`` row, and the driver copies the earlier result.
    """
    done_shas, done_pairs = _done_sets(done_ref)
    out = []
    for src in batch.to_pylist():
        row = {
            "path": src["path"],
            "size_bytes": src.get("size"),
            "source_fingerprint": src.get("fingerprint"),
        }
        t0 = time.perf_counter()
        try:
            data = read_bytes(src["path"], storage_options)
        except Exception as exc:  # permissions, a file removed since listing, network
            out.append(fail(row, "read_failed", f"cannot read the file: {exc}"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        row.update(sha256=digest, size_bytes=len(data))
        add_timing(row, "read_s", time.perf_counter() - t0)
        if digest in done_shas:
            row["status"] = UNCHANGED if (src["path"], digest) in done_pairs else REUSED
        else:
            row["audio"] = data
        out.append(row)
    return to_table(out)


def decode_audio(batch: pa.Table, *, max_duration_s: float | None = None) -> pa.Table:
    """Bytes -> 16-bit PCM at 16 kHz (half the size of float32 in the object store)."""
    out = []
    for row in batch.to_pylist():
        if passes_through(row) or row.get("audio") is None:
            out.append(row)
            continue
        t0 = time.perf_counter()
        data = row["audio"]
        try:
            info = probe(data, max_duration_s)  # header only: refuses 'hours' before decoding
            row["duration_s"] = info.duration_s
            pcm = decode(data, max_duration_s)
        except AudioError as exc:
            out.append(fail(row, exc.code, exc.message))
            continue
        except Exception as exc:  # a decoder bug must cost one file, not the job
            out.append(fail(row, "audio_decode_failed", f"{type(exc).__name__}: {exc}"))
            continue
        # decode() gives s16/32768 exactly, so this round trip is lossless.
        pcm16 = np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype(np.int16)
        row["duration_s"] = round(pcm16.shape[0] / SAMPLE_RATE, 3)
        row["pcm"] = pcm16.tobytes()
        row["audio"] = None
        add_timing(row, "decode_s", time.perf_counter() - t0)
        out.append(row)
    return to_table(out)


# --- actors -----------------------------------------------------------------------


class Transcribe:
    """One Whisper model per actor; ``threads`` overrides ``AIPP_STT_CPU_THREADS``."""

    def __init__(self, settings, threads: int | None = None, language: str | None = None):
        from app.speech.stt import SpeechToText, SttOptions

        if threads:
            settings = settings.model_copy(update={"stt_cpu_threads": threads})
        self.stt = SpeechToText.from_settings(settings)
        self.options = SttOptions(language=language)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return over_pcm(batch, self._transcribe, "transcribe_failed", "transcribe_s")

    def _transcribe(self, row: dict, pcm: np.ndarray) -> None:
        transcript = self.stt.transcribe_pcm(pcm, self.options)
        row.update(
            language=transcript.language,
            transcript_text=transcript.text,
            duration_s=transcript.duration_s,
            segments=[
                {"id": s.id, "start": s.start, "end": s.end, "text": s.text}
                for s in transcript.segments
            ],
        )
        set_model(row, "stt", self.stt.model_name)


class Summarize:
    """The service's summarizer (same engine, prompt, schema and chunking) in an actor."""

    def __init__(self, settings, threads: int | None = None, instruction: str | None = None):
        from app.llm.engines import build_engine
        from app.llm.summarize import TranscriptSummarizer

        if threads:
            settings = settings.model_copy(update={"llm_threads": threads})
        self.summarizer = TranscriptSummarizer(
            build_engine(settings),
            max_output_tokens=settings.llm_max_output_tokens,
            temperature=settings.llm_temperature,
        )
        self.instruction = instruction

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for row in batch.to_pylist():
            if passes_through(row):
                out.append(row)
                continue
            try:
                result = self.summarizer.summarize(
                    # With --diarize: "Speaker N: ..." lines (pipelines/diarize_stage.py).
                    row.get("speaker_text") or row.get("transcript_text") or "",
                    self.instruction,
                    segments=row.get("segments") or None,
                    duration_s=row.get("duration_s"),
                )
            except Exception as exc:
                out.append(fail(row, "summarize_failed", f"{type(exc).__name__}: {exc}"))
                continue
            row.update(
                summary=result.summary.summary,
                key_points=result.summary.key_points,
                action_items=result.summary.action_items,
            )
            set_model(row, "llm", result.model)
            add_timing(row, "summarize_s", result.summarize_s)
            out.append(row)
        return to_table(out)
