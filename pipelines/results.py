"""The batch output: one row per input file, written as part files that are never half there.

Layout of ``DST`` (a local directory or any fsspec URL)::

    DST/part-<run_id>-00001.parquet     # or .jsonl with --format jsonl
    DST/part-<run_id>-00002.parquet
    DST/_report-<run_id>.json           # the run's final counts (ignored by readers)
    DST/_seen-<run_id>-00001.jsonl      # new mtimes/ETags of files found unchanged by hash

Each part file holds the rows finished since the previous one. A local part is
written to a hidden temporary name and renamed into place; on object stores a
PUT is atomic already. So a job killed at any moment leaves only complete part
files, ``pandas.read_parquet(DST)`` / ``ray.data.read_parquet(DST)`` read them,
and the next run reads them back (:func:`load_done`) to skip finished files.

A file counts as finished (skipped by the next run) when a row with its sha256
succeeded, or failed with an error that is a property of its bytes (corrupt,
not audio, empty): re-reading those bytes cannot go better. Other failures
(a read error, a crashed model) are retried by the next run; ``--force`` redoes
everything. The newest row per ``sha256`` (``finished_at``) is the current one.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from app.core.task_vocabulary import TaskStatus

FORMATS = ("parquet", "jsonl")
PART_PREFIX = "part-"
# AudioError codes that depend only on the file's bytes: retrying cannot help.
PERMANENT_ERRORS = frozenset(
    {"empty_file", "unsupported_media", "audio_decode_failed", "audio_truncated"}
)

SEGMENT = pa.struct(
    [
        ("id", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("speaker", pa.string()),  # null unless --diarize
    ]
)
SPEAKER = pa.struct([("id", pa.string()), ("speaking_s", pa.float64())])
SPEAKER_COUNT = pa.struct(
    [
        ("count", pa.int32()),
        ("confidence", pa.float64()),
        ("method", pa.string()),
        ("overlap_s", pa.float64()),
    ]
)
MODELS = pa.struct([("stt", pa.string()), ("llm", pa.string())])
TIMING_KEYS = ("read_s", "decode_s", "diarize_s", "transcribe_s", "summarize_s", "total_s")
TIMINGS = pa.struct([(k, pa.float64()) for k in TIMING_KEYS])

RESULT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("language", pa.string()),
        ("transcript_text", pa.string()),
        ("segments", pa.list_(SEGMENT)),
        ("speakers", pa.list_(SPEAKER)),  # empty unless --diarize
        ("speaker_count", SPEAKER_COUNT),  # null unless --diarize
        ("summary", pa.string()),
        ("key_points", pa.list_(pa.string())),
        ("action_items", pa.list_(pa.string())),
        ("status", pa.string()),  # succeeded | failed (the task statuses)
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("models", MODELS),
        ("timings", TIMINGS),
        ("source_fingerprint", pa.string()),
        ("task_id", pa.string()),
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)
RESULT_COLUMNS = tuple(RESULT_SCHEMA.names)


def new_run_id() -> str:
    """Sorts by start time, so part files list in the order runs wrote them."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def is_final(status: str | None, error_code: str | None) -> bool:
    return status == TaskStatus.SUCCEEDED or (error_code or "") in PERMANENT_ERRORS


def _plain(value):
    """numpy scalars/arrays (from Ray's row-based stages) -> Python values."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def normalize(row: dict) -> dict:
    """A finished pipeline row -> exactly the output columns, with status filled in."""
    out = {name: _plain(row.get(name)) for name in RESULT_COLUMNS}
    if out["error_code"] and not out["error_message"]:
        out["error_message"] = out["error_code"]
    out["status"] = str(TaskStatus.FAILED if out["error_code"] else TaskStatus.SUCCEEDED)
    timings = {k: float(v) for k, v in (out["timings"] or {}).items() if v is not None}
    timings["total_s"] = round(sum(v for k, v in timings.items() if k != "total_s"), 4)
    out["timings"] = {k: timings.get(k) for k in TIMING_KEYS}
    out["models"] = {"stt": None, "llm": None, **(out["models"] or {})}
    for key in ("key_points", "action_items", "segments", "speakers"):
        out[key] = list(out[key] or [])
    return out


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@dataclass
class Done:
    """What earlier runs finished, read back from ``DST``."""

    shas: set[str] = field(default_factory=set)
    pairs: set[tuple[str, str]] = field(default_factory=set)  # (path, sha256)
    keys: set[tuple[str, str]] = field(default_factory=set)  # (path, source_fingerprint)
    by_sha: dict[str, str] = field(default_factory=dict)  # sha256 -> newest part holding it
    task_ids: set[str] = field(default_factory=set)
    rows: int = 0
    parts: int = 0
    unreadable: list[str] = field(default_factory=list)


class ResultStore:
    def __init__(self, url: str, fmt: str = "parquet", storage_options: dict | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format '{fmt}' (have {', '.join(FORMATS)})")
        self.url = url
        self.fmt = fmt
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.local = isinstance(self.fs, LocalFileSystem)
        self._seq = 0

    def _join(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def parts(self) -> list[str]:
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            p
            for p in names
            if os.path.basename(p).startswith(PART_PREFIX) and p.endswith((".parquet", ".jsonl"))
        )

    def read_part(self, path: str, columns: Iterable[str] | None = None) -> list[dict]:
        cols = list(columns) if columns is not None else None
        if path.endswith(".parquet"):
            with self.fs.open(path, "rb") as fh:
                table = pq.read_table(fh, columns=cols)
            return table.to_pylist()
        rows = []
        with self.fs.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line (never from our writer, but be lenient)
                rows.append({k: row.get(k) for k in cols} if cols else row)
        return rows

    def load_done(self) -> Done:
        done = Done()
        cols = ("path", "sha256", "status", "error_code", "source_fingerprint", "task_id")
        for part in self.parts():
            try:
                rows = self.read_part(part, cols)
            except Exception as exc:  # a foreign or damaged file must not stop the job
                done.unreadable.append(f"{part}: {exc}")
                continue
            done.parts += 1
            for row in rows:
                done.rows += 1
                if row.get("task_id"):
                    done.task_ids.add(row["task_id"])
                if not is_final(row.get("status"), row.get("error_code")):
                    continue
                if row.get("sha256"):
                    done.shas.add(row["sha256"])
                    done.pairs.add((row.get("path"), row["sha256"]))
                    done.by_sha[row["sha256"]] = part
                if row.get("path") and row.get("source_fingerprint"):
                    done.keys.add((row["path"], row["source_fingerprint"]))
        self._load_seen(done)
        return done

    def earlier_result(self, done: Done, sha256: str, cache: dict) -> dict | None:
        """The finished row for ``sha256`` an earlier run wrote (``cache``: part -> rows)."""
        part = done.by_sha.get(sha256)
        if part is None:
            return None
        if part not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[part] = self.read_part(part)
        matches = [r for r in cache[part] if r.get("sha256") == sha256]
        final = [r for r in matches if is_final(r.get("status"), r.get("error_code"))]
        return (final or matches or [None])[-1]

    def write_seen(self, rows: list[dict], run_id: str, seq: int) -> None:
        """Remember new fingerprints of files whose bytes were already done (same path)."""
        path = self._join(f"_seen-{run_id}-{seq:05d}.jsonl")
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                keep = {k: row.get(k) for k in ("path", "sha256", "source_fingerprint")}
                fh.write(json.dumps(keep) + "\n")

    def _load_seen(self, done: Done) -> None:
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return
        for path in sorted(n for n in names if os.path.basename(n).startswith("_seen-")):
            try:
                rows = self.read_part(path)
            except Exception as exc:
                done.unreadable.append(f"{path}: {exc}")
                continue
            for row in rows:
                if row.get("sha256") in done.shas and row.get("source_fingerprint"):
                    done.keys.add((row.get("path"), row["source_fingerprint"]))

    def read_all(self) -> list[dict]:
        rows: list[dict] = []
        for part in self.parts():
            rows.extend(self.read_part(part))
        return rows

    def write_part(self, rows: list[dict], run_id: str) -> str:
        """Write ``rows`` (already :func:`normalize`-d) as the next part file; atomic."""
        self._seq += 1
        name = f"{PART_PREFIX}{run_id}-{self._seq:05d}.{self.fmt}"
        final = self._join(name)
        self.fs.makedirs(self.root, exist_ok=True)
        target = self._join(f".{name}.tmp") if self.local else final
        with self.fs.open(target, "wb") as fh:
            if self.fmt == "parquet":
                table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
                pq.write_table(table, fh, compression="zstd")
            else:
                for row in rows:
                    line = json.dumps(row, default=_json_default, ensure_ascii=False)
                    fh.write(line.encode("utf-8") + b"\n")
        if self.local:
            os.replace(target, final)
        return final

    def write_report(self, report: dict, run_id: str) -> str:
        path = self._join(f"_report-{run_id}.json")
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, default=_json_default)
        return path
