"""Batch audio -> transcript + summary for every file of a folder or bucket, on Ray Data.

Run it on a cluster::

    ray job submit --working-dir . -- \
        python -m pipelines.batch_summarize --input s3://bucket/calls/ --output s3://bucket/out/

or right here (a local Ray starts, or the one in ``RAY_ADDRESS`` / ``--address``)::

    python -m pipelines.batch_summarize --input ./recordings --output ./out
    aipp batch --input ./recordings --output ./out --format jsonl

The pipeline (one Ray Data dataset, streamed)::

    listing (driver) -> read + sha256 (tasks) -> probe + decode (tasks)
        -> Whisper (actor pool) -> summary (actor pool, or ray.data.llm/vLLM on GPUs)
        -> driver: part files in DST, tasks in the database, progress, report

See ``docs/batch.md`` for the output columns, resuming and sizing.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime

from app.core.settings import Settings, get_settings
from app.core.task_vocabulary import TaskStatus
from pipelines.batch_plan import IO_TASK_CPUS, BatchError, BatchOptions, Plan, make_plan
from pipelines.results import RESULT_COLUMNS, Done, ResultStore, new_run_id, normalize
from pipelines.sources import list_audio
from pipelines.stages import REUSED, UNCHANGED, fail

REPORT_PREFIX = "BATCH_REPORT "


def preflight(settings: Settings) -> dict[str, str]:
    """Resolve both models in the driver so a bad setting fails in one line, not in actors."""
    from app.core.model_assets import ModelError, resolve_llm_model, resolve_stt_model

    try:
        stt = resolve_stt_model(settings.stt_model, settings.cache_dir)
        llm = resolve_llm_model(settings.llm_engine, settings.llm_model, settings.cache_dir)
    except ModelError as exc:
        raise BatchError(str(exc)) from None
    return {"stt": stt.name, "llm": llm.name}


def build_dataset(files, done_ref, opts: BatchOptions, settings: Settings, plan: Plan):
    """The lazy Ray Data pipeline over ``files`` (listing rows); nothing runs yet.

    ``done_ref``: ``[ObjectRef]`` of (finished sha256s, finished (path, sha256)) or None.
    """
    import ray.data
    from ray.data import TaskPoolStrategy

    from pipelines.stages import Summarize, Transcribe, decode_audio, read_files

    items = [{"path": f.path, "size": f.size, "fingerprint": f.fingerprint} for f in files]
    # One file per block: files stream through the stages one by one, so actors share
    # the work evenly and each result reaches the driver as soon as it is done.
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    io = dict(
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=IO_TASK_CPUS,
        compute=TaskPoolStrategy(size=plan.io_tasks),
    )
    ds = ds.map_batches(read_files, fn_kwargs={"done_ref": done_ref}, **io)
    ds = ds.map_batches(
        decode_audio, fn_kwargs={"max_duration_s": settings.max_audio_minutes * 60}, **io
    )
    if opts.diarize:
        from pipelines.diarize_stage import Diarize

        diarize = {
            "threads": plan.stt_threads or None,
            "min_speakers": opts.min_speakers,
            "max_speakers": opts.max_speakers,
        }
        ds = _actor_stage(ds, Diarize, diarize, 1, plan.stt_num_cpus)
    stt = {"settings": settings, "threads": plan.stt_threads or None, "language": opts.language}
    ds = _actor_stage(ds, Transcribe, stt, plan.stt_actors, plan.stt_num_cpus, plan.stt_num_gpus)
    if opts.diarize:
        from pipelines.diarize_stage import merge_speakers

        ds = ds.map_batches(merge_speakers, **io)
    if plan.summarizer == "vllm":
        from pipelines.summarize_vllm import build_vllm_summarizer

        summarize, _ = build_vllm_summarizer(
            settings,
            engines=plan.llm_actors,
            gpu_fraction=plan.llm_num_gpus,
            batch_size=opts.llm_batch_size,
            instruction=opts.instruction,
        )
        return summarize(ds)  # failed inferences mapped to failed rows (make_finalize)
    llm = {
        "settings": settings,
        "threads": plan.llm_threads or None,
        "instruction": opts.instruction,
    }
    return _actor_stage(ds, Summarize, llm, plan.llm_actors, plan.llm_num_cpus, plan.llm_num_gpus)


def _actor_stage(ds, cls, kwargs: dict, actors: int, num_cpus: float, num_gpus: float = 0.0):
    """One model per actor, a pool of ``actors``, one file per call (Diarize, Whisper, LLM)."""
    from ray.data import ActorPoolStrategy

    gpu = {"num_gpus": num_gpus} if num_gpus else {}
    return ds.map_batches(
        cls,
        fn_constructor_kwargs=kwargs,
        compute=ActorPoolStrategy(size=actors),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=num_cpus,
        **gpu,
    )


class Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.ok = 0
        self.failed = 0
        self.reused = 0
        self.unchanged = 0  # read, and found done already (same path, same bytes)
        self.audio_s = 0.0
        self.errors: Counter[str] = Counter()
        self.t0 = time.perf_counter()

    def add(self, row: dict, reused: bool = False) -> None:
        if reused:
            self.reused += 1
        elif row["status"] == TaskStatus.SUCCEEDED:
            self.ok += 1
            self.audio_s += row.get("duration_s") or 0.0
        else:
            self.failed += 1
            self.errors[row.get("error_code") or "unknown"] += 1

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[batch] {message}", flush=True)

    def tick(self, parts: int) -> None:
        wall = time.perf_counter() - self.t0
        speed = self.audio_s / wall if wall > 0 else 0.0
        self.log(
            f"{self.processed + self.reused + self.unchanged}/{self.total} files | ok {self.ok} | "
            f"failed {self.failed}"
            + (f" | reused {self.reused}" if self.reused else "")
            + f" | {self.audio_s / 3600:.3f} h audio | {speed:.2f}x real time | "
            f"{parts} part file(s)"
        )


class Collector:
    """The driver's end of the pipeline: rows -> part files (+ tasks), as they arrive."""

    def __init__(
        self,
        store: ResultStore,
        done: Done,
        run_id: str,
        opts: BatchOptions,
        recorder,
        progress: Progress,
    ) -> None:
        self.store = store
        self.done = done
        self.run_id = run_id
        self.opts = opts
        self.recorder = recorder
        self.progress = progress
        self.buffer: list[dict] = []
        self.seen: list[dict] = []
        self.parts = 0
        self._seen_seq = 0
        self.last_flush = time.monotonic()
        self._earlier: dict = {}

    def _reuse(self, raw: dict) -> dict:
        """A file an earlier run finished under another path: copy that result."""
        earlier = self.store.earlier_result(self.done, raw["sha256"], self._earlier)
        if earlier is None:  # the part file vanished since we listed it
            raw = dict(raw, status=None)
            return fail(raw, "reuse_failed", "the earlier result for these bytes is gone")
        row = {k: earlier.get(k) for k in RESULT_COLUMNS}
        row.update(
            path=raw["path"],
            size_bytes=raw["size_bytes"],
            source_fingerprint=raw["source_fingerprint"],
        )
        return row

    def add_batch(self, rows: list[dict]) -> None:
        now = datetime.now(UTC)
        for raw in rows:
            if raw.get("status") == UNCHANGED:
                self.seen.append(raw)
                self.progress.unchanged += 1
                continue
            reused = raw.get("status") == REUSED
            row = normalize(self._reuse(raw) if reused else raw)
            row.update(run_id=self.run_id, finished_at=now, task_id=None)
            if self.recorder is not None:
                row["task_id"] = new_task_id()
            self.buffer.append(row)
            self.progress.add(row, reused=reused)
        stale = time.monotonic() - self.last_flush >= self.opts.flush_interval_s
        if len(self.buffer) + len(self.seen) >= self.opts.rows_per_file or stale:
            self.flush()

    def flush(self) -> None:
        if self.seen:
            self._seen_seq += 1
            self.store.write_seen(self.seen, self.run_id, self._seen_seq)
            self.seen.clear()
        if self.buffer:
            self.store.write_part(self.buffer, self.run_id)  # first the file, then the tasks
            self.parts += 1
            if self.recorder is not None:
                for row in self.buffer:
                    self.recorder.record(row)
            self.buffer.clear()
            self.progress.tick(self.parts)
        self.last_flush = time.monotonic()


def new_task_id() -> str:
    from app.storage.sql.models import new_id

    return new_id()


def _start_ray(opts: BatchOptions) -> tuple[bool, int | None]:
    """Connect to ``--address``/``RAY_ADDRESS`` or start a local Ray; (started?, local cores)."""
    import ray

    if ray.is_initialized():
        return False, None
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise BatchError(
            f"{address} is a dashboard (job API) address: submit with `ray job submit "
            f"--address {address} ...`, or give --address the GCS address (host:6379)"
        )
    from app.core.ray_auth import ensure_ray_token

    ensure_ray_token()  # a fresh machine has no ~/.ray/auth_token yet
    if address and address != "local":
        ray.init(address=address, log_to_driver=True)
        return True, None
    cores = os.cpu_count() or 1
    # Logical CPUs are scheduling slots; each actor's threads are set explicitly, so
    # two slots per core let Whisper, the LLM and the readers overlap on a laptop.
    ray.init(num_cpus=opts.num_cpus or 2 * cores, include_dashboard=False)
    return True, cores


def run_batch(opts: BatchOptions) -> dict:
    """Run the whole job; returns the report (also printed as a ``BATCH_REPORT`` line)."""
    t_start = time.perf_counter()
    settings = opts.settings or get_settings()
    run_id = new_run_id()
    store = ResultStore(opts.output, opts.format)
    models = preflight(settings)
    files = list_audio(opts.input, opts.extensions)
    found = store.load_done()
    done = Done() if opts.force else found  # --force: nothing counts as done
    progress = Progress(0, opts.quiet)
    for problem in found.unreadable:
        progress.log(f"warning: ignoring unreadable output file {problem}")

    record = opts.record_tasks if opts.record_tasks is not None else bool(settings.database_url)
    recorder = None
    if record:
        from pipelines.record import TaskRecorder

        options = {"batch_run": run_id, **({"language": opts.language} if opts.language else {})}
        recorder = TaskRecorder(settings.effective_database_url, opts.tenant, options)
    try:
        backfilled = _backfill(store, recorder, found.task_ids, progress) if recorder else 0
        pending = [f for f in files if (f.path, f.fingerprint) not in done.keys]
        fast_skipped = len(files) - len(pending)
        deferred = 0
        if opts.limit is not None and len(pending) > opts.limit:
            deferred = len(pending) - opts.limit
            pending = pending[: opts.limit]
        progress.total = len(pending)
        progress.log(
            f"run {run_id}: {len(files)} file(s) in {opts.input}; {fast_skipped} unchanged "
            f"and done in {opts.output}; {len(pending)} to read"
            + (f"; {deferred} left for later (--limit)" if deferred else "")
        )
        collector = Collector(store, done, run_id, opts, recorder, progress)
        plan, pipeline_s = (
            _execute(pending, done, opts, settings, collector, progress) if pending else (None, 0.0)
        )
    finally:
        if recorder is not None:
            recorder.close()

    processed = progress.processed
    # Read but neither processed nor reused: the same bytes under the same path were done.
    skipped = fast_skipped + len(pending) - processed - progress.reused
    wall_s = time.perf_counter() - t_start
    audio_s = progress.audio_s
    report = {
        "run_id": run_id,
        "input": opts.input,
        "output": opts.output,
        "format": opts.format,
        "files": len(files),
        "skipped": skipped,
        "processed": processed,
        "ok": progress.ok,
        "failed": progress.failed,
        "reused": progress.reused,
        "deferred": deferred,
        "errors": dict(progress.errors),
        "audio_s": round(audio_s, 3),
        "audio_hours": round(audio_s / 3600, 4),
        "wall_s": round(wall_s, 3),
        "pipeline_s": round(pipeline_s, 3),
        # Real-time factor: processing seconds per audio second (< 1 is faster than real time).
        "rtf": round(wall_s / audio_s, 4) if audio_s else None,
        "speed_x": round(audio_s / wall_s, 3) if audio_s else None,
        "parts_written": collector.parts,
        "tasks_recorded": recorder.recorded - backfilled if recorder else 0,
        "tasks_backfilled": backfilled,
        "models": models,
        "plan": asdict(plan) if plan else None,
    }
    store.write_report(report, run_id)
    _print_report(report, opts.quiet)
    return report


def _backfill(store: ResultStore, recorder, task_ids: set[str], progress: Progress) -> int:
    """Record rows whose task an interrupted run wrote to DST but not to the database."""
    missing = recorder.missing(task_ids) if task_ids else set()
    if not missing:
        return 0
    n = recorder.backfill(r for r in store.read_all() if r.get("task_id") in missing)
    progress.log(f"recorded {n} task(s) that an interrupted run had not recorded")
    return n


def _execute(
    pending,
    done: Done,
    opts: BatchOptions,
    settings: Settings,
    collector: Collector,
    progress: Progress,
) -> tuple[Plan, float]:
    """Start/join Ray, run the dataset and stream its rows into ``collector``."""
    import ray

    started_ray, local_cores = _start_ray(opts)
    try:
        plan = make_plan(opts, settings, ray.available_resources(), len(pending), local_cores)
        progress.log(plan.describe())
        if plan.shortfall and local_cores:  # our own Ray: nothing will ever free up
            raise BatchError(f"{plan.shortfall}: ask for fewer actors or more --num-cpus")
        if plan.shortfall:
            progress.log(f"warning: {plan.shortfall}; waiting for the autoscaler or other jobs")
        done_ref = [ray.put((frozenset(done.shas), frozenset(done.pairs)))] if done.shas else None
        ds = build_dataset(pending, done_ref, opts, settings, plan)
        t0 = progress.t0 = time.perf_counter()
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                collector.add_batch(batch.to_pylist())
        except (KeyboardInterrupt, SystemExit):
            progress.log("interrupted: saving the finished rows, then stopping")
            raise
        finally:
            collector.flush()  # a stopped job keeps everything it finished
        return plan, time.perf_counter() - t0
    finally:
        if started_ray:
            ray.shutdown()


def _print_report(report: dict, quiet: bool) -> None:
    if not quiet:
        rtf = f"{report['rtf']:.3f}" if report["rtf"] is not None else "n/a"
        speed = f"{report['speed_x']:.2f}x" if report["speed_x"] is not None else "n/a"
        lines = [
            f"files      {report['files']} (processed {report['processed']}, skipped "
            f"{report['skipped']}, reused {report['reused']}, left for later "
            f"{report['deferred']})",
            f"ok/failed  {report['ok']} / {report['failed']}"
            + (f"  {report['errors']}" if report["errors"] else ""),
            f"audio      {report['audio_hours']:.4f} h ({report['audio_s']:.1f} s)",
            f"wall time  {report['wall_s']:.1f} s (pipeline {report['pipeline_s']:.1f} s)",
            f"speed      RTF {rtf} ({speed} real time)",
            f"output     {report['output']} ({report['parts_written']} new part file(s), "
            f"{report['tasks_recorded']} task(s) recorded)",
        ]
        print("\n".join(["", "Batch report", *lines]), flush=True)
    print(REPORT_PREFIX + json.dumps(report, default=str), flush=True)


def parse_report(text: str) -> dict | None:
    """The last ``BATCH_REPORT`` JSON in a job's output (for scripts and tests)."""
    found = None
    for line in text.splitlines():
        idx = line.find(REPORT_PREFIX)
        if idx >= 0:
            found = json.loads(line[idx + len(REPORT_PREFIX) :])
    return found


if __name__ == "__main__":
    from pipelines.cli import main

    main()
