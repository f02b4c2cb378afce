"""Issue #4: the Ray Data batch job (pipelines/batch_summarize.py).

Fast tests call the pieces directly (listing, stages, output store, planning).
The tests named ``test_slow_*`` run the real job with the real models on the
session's Ray head (``ray_cluster``): as a driver process, killed and resumed,
and through ``ray job submit``. They take a minute or two each on 2 cores; they
run by default (deselect with ``-k "not slow"``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import stages
from pipelines.batch_summarize import BatchError, BatchOptions, make_plan, parse_report
from pipelines.results import ResultStore, is_final, normalize
from pipelines.sources import SourceError, list_audio, parse_extensions
from pipelines.summarize_vllm import fit_to_budget
from tests.conftest import DATA, JFK_PHRASE

REPO = Path(__file__).resolve().parent.parent
GOOD = ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")
BAD = {  # name -> the error codes its row may carry
    "corrupt.flac": {"audio_decode_failed", "audio_truncated"},
    "notes.wav": {"unsupported_media"},
    "empty.mp3": {"empty_file"},
}
JOB_TIMEOUT_S = 900


def words(text: str | None) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", (text or "").lower()).split())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bad_files(folder: Path) -> None:
    rng = random.Random(4)
    header = (DATA / "jfk.flac").read_bytes()[:8192]  # a real FLAC header, then noise
    (folder / "corrupt.flac").write_bytes(header + rng.randbytes(200_000))
    (folder / "notes.wav").write_text("meeting notes, not a recording\n")
    (folder / "empty.mp3").write_bytes(b"")


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch_in")
    for name in GOOD:
        (folder / name).write_bytes((DATA / name).read_bytes())
    write_bad_files(folder)
    (folder / "README.txt").write_text("not an audio extension: never listed\n")
    return folder


def job_env(cluster, tmp: Path, database_url: str | None = None) -> dict[str, str]:
    env = cluster.env()
    for key in [k for k in env if k.startswith("AIPP_")]:
        if key not in ("AIPP_CACHE_DIR",):  # keep the assembled GGUF; drop everything else
            env.pop(key)
    env["AIPP_DATA_DIR"] = str(tmp / "data")
    if database_url:
        env["AIPP_DATABASE_URL"] = database_url
    return env


def job_args(src: Path, dst: Path, *extra: str) -> list[str]:
    # One Whisper and one llama.cpp actor: the shared head may also host the Serve app.
    return [
        "--input",
        str(src),
        "--output",
        str(dst),
        "--stt-actors",
        "1",
        "--llm-actors",
        "1",
        *extra,
    ]


def read_rows(out: Path) -> list[dict]:
    """All rows of a Parquet output dir (pyarrow keeps nulls as None, unlike pandas)."""
    return pq.read_table(out).to_pylist()


def run_job(cluster, env, args: list[str]) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.batch_summarize",
            *args,
            "--address",
            cluster.gcs_address,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = parse_report(proc.stdout)
    assert report is not None, proc.stdout[-4000:]
    return report


# --- fast: the pieces ------------------------------------------------------------------


def test_list_audio_filters_extensions_hidden_files_and_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "b.MP3", "c.txt", ".hidden.wav", "._a.wav", "sub/d.flac"):
        (tmp_path / name).write_bytes(b"x" * 3)
    found = [Path(f.path).relative_to(tmp_path).as_posix() for f in list_audio(str(tmp_path))]
    assert found == ["a.wav", "b.MP3", "sub/d.flac"]
    assert [Path(f.path).name for f in list_audio(str(tmp_path), ("wav",))] == ["a.wav"]
    assert [Path(f.path).name for f in list_audio(f"{tmp_path}/**/*.flac")] == ["d.flac"]
    single = list_audio(str(tmp_path / "a.wav"))
    assert len(single) == 1 and single[0].size == 3 and single[0].fingerprint.startswith("3:")
    assert parse_extensions(" .WAV, flac,,") == ("wav", "flac")
    with pytest.raises(SourceError):
        list_audio(str(tmp_path / "missing"))


def listing(paths: list[Path]) -> pa.Table:
    return pa.Table.from_pylist([{"path": str(p), "size": 0, "fingerprint": "f"} for p in paths])


class FakeRef:  # stands in for the ObjectRef the driver ray.put()s
    def __init__(self, key: str) -> None:
        self.key = key

    def hex(self) -> str:
        return self.key


def test_read_and_decode_stages_turn_bad_files_into_error_rows(tmp_path):
    write_bad_files(tmp_path)
    jfk = DATA / "jfk.flac"
    paths = [
        jfk,
        tmp_path / "corrupt.flac",
        tmp_path / "notes.wav",
        tmp_path / "empty.mp3",
        tmp_path / "vanished.wav",
    ]
    rows = stages.decode_audio(stages.read_files(listing(paths)), max_duration_s=3600).to_pylist()
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == len(paths)
    ok = by_name["jfk.flac"]
    assert ok["error_code"] is None and ok["sha256"] == sha256(jfk)
    assert ok["duration_s"] == pytest.approx(11.0, abs=0.1)
    assert len(ok["pcm"]) == pytest.approx(11.0 * 16000 * 2, rel=0.01)  # 16-bit mono 16 kHz
    assert ok["audio"] is None  # the compressed bytes do not travel further
    for name, codes in BAD.items():
        assert by_name[name]["error_code"] in codes, by_name[name]
        assert by_name[name]["pcm"] is None and by_name[name]["error_message"]
    assert by_name["vanished.wav"]["error_code"] == "read_failed"


def test_read_stage_marks_files_an_earlier_run_finished(tmp_path):
    jfk, copy = DATA / "jfk.flac", tmp_path / "copy.flac"
    copy.write_bytes(jfk.read_bytes())
    digest = sha256(jfk)
    stages._done_cache["test-done"] = (frozenset({digest}), frozenset({(str(jfk), digest)}))
    rows = stages.read_files(listing([jfk, copy]), done_ref=[FakeRef("test-done")]).to_pylist()
    status = {Path(r["path"]).name: r["status"] for r in rows}
    assert status == {"jfk.flac": stages.UNCHANGED, "copy.flac": stages.REUSED}
    assert all(r["audio"] is None and stages.passes_through(r) for r in rows)


def test_result_store_writes_whole_parts_and_knows_what_is_done(tmp_path):
    def row(name: str, error: str | None) -> dict:
        return normalize(
            {
                "path": f"/in/{name}",
                "sha256": name * 4,
                "source_fingerprint": "1:mtime=1",
                "error_code": error,
                "transcript_text": None if error else "hi",
                "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": "hi"}],
                "timings": {"read_s": 0.5, "transcribe_s": 1.0},
            }
        )

    rows = [row("a", None), row("b", "unsupported_media"), row("c", "transcribe_failed")]
    assert rows[0]["status"] == "succeeded" and rows[0]["timings"]["total_s"] == 1.5
    assert rows[2]["status"] == "failed" and rows[2]["error_message"] == "transcribe_failed"
    for fmt in ("parquet", "jsonl"):
        store = ResultStore(str(tmp_path / fmt), fmt)
        assert store.load_done().rows == 0
        store.write_part(rows, "run1")
        assert [p.name for p in (tmp_path / fmt).iterdir()] == [f"part-run1-00001.{fmt}"]
        done = store.load_done()
        # A success and a content error are final; a transient failure is retried.
        assert done.shas == {"aaaa", "bbbb"} and done.rows == 3
        assert ("/in/a", "1:mtime=1") in done.keys and ("/in/c", "1:mtime=1") not in done.keys
        store.write_seen(
            [{"path": "/in/a", "sha256": "aaaa", "source_fingerprint": "1:x"}], "run1", 1
        )
        assert ("/in/a", "1:x") in store.load_done().keys
    frame = pd.read_parquet(tmp_path / "parquet")  # the _seen file is ignored by readers
    assert list(frame["path"]) == ["/in/a", "/in/b", "/in/c"]
    assert is_final("failed", "empty_file") and not is_final("failed", "read_failed")


def test_rows_written_but_not_recorded_are_recorded_by_the_next_run(tmp_path):
    from datetime import UTC, datetime

    from app.storage.sql.models import new_id
    from pipelines.batch_summarize import Progress, _backfill
    from pipelines.record import TaskRecorder

    store = ResultStore(str(tmp_path / "out"))
    ok = normalize(
        {
            "path": "/in/a.wav",
            "sha256": "a" * 64,
            "transcript_text": "hello",
            "language": "en",
            "duration_s": 2.0,
            "summary": "A greeting.",
            "key_points": ["hello"],
            "models": {"stt": "w", "llm": "q"},
        }
    )
    bad = normalize({"path": "/in/b.wav", "sha256": "b" * 64, "error_code": "empty_file"})
    for row in (ok, bad):
        row.update(task_id=new_id(), run_id="r1", finished_at=datetime.now(UTC))
    store.write_part([ok, bad], "r1")  # the job died before recording these
    recorder = TaskRecorder(f"sqlite:///{tmp_path / 'aipp.db'}", "batch")
    try:
        ids = store.load_done().task_ids
        assert ids == {ok["task_id"], bad["task_id"]}
        assert _backfill(store, recorder, ids, Progress(0, quiet=True)) == 2
        assert _backfill(store, recorder, ids, Progress(0, quiet=True)) == 0  # once only
        task = recorder.store.get(ok["task_id"])
        assert task.status == "succeeded" and task.source == "batch"
        assert task.result["transcript"]["text"] == "hello"
        assert task.result["summary"]["key_points"] == ["hello"]
        failed = recorder.store.get(bad["task_id"])
        assert failed.status == "failed" and failed.error_code == "empty_file"
    finally:
        recorder.close()


def test_plan_sizes_pools_for_cpu_and_for_gpu(monkeypatch):
    from app.core.settings import Settings

    cpu = Settings()
    opts = BatchOptions(input="in", output="out")
    plan = make_plan(opts, cpu, {"CPU": 4.0, "memory": 16 * 2**30}, 20, local_cores=2)
    assert (plan.device, plan.summarizer) == ("cpu", "actor")
    assert (plan.stt_actors, plan.llm_actors) == (1, 2)
    assert plan.stt_num_gpus == plan.llm_num_gpus == 0 and plan.llm_threads == 1
    assert make_plan(opts, cpu, {"CPU": 4.0}, 1, local_cores=2).llm_actors == 1  # one file
    # More actors than a local Ray's CPUs: they share logical CPUs, the readers keep theirs.
    crowded = make_plan(BatchOptions("in", "out", llm_actors=3), cpu, {"CPU": 4.0}, 9, 2)
    assert crowded.llm_actors == 3 and crowded.shortfall is None
    used = crowded.stt_num_cpus + 3 * crowded.llm_num_cpus + crowded.io_tasks * 0.25
    assert used <= 4.0
    # On a cluster we did not start, the plan stays and says what is missing.
    assert make_plan(BatchOptions("in", "out", llm_actors=3), cpu, {"CPU": 4.0}, 9, None).shortfall
    gpu_res = {"CPU": 16.0, "GPU": 2.0, "memory": 64 * 2**30}
    vllm = Settings(llm_engine="vllm", llm_model="Qwen/Qwen2.5-0.5B-Instruct")
    plan = make_plan(opts, vllm, gpu_res, 100, local_cores=None)
    assert plan.summarizer == "vllm" and plan.stt_actors == 2 and plan.llm_actors == 2
    assert plan.stt_num_gpus == 0.5 and plan.llm_num_gpus == 0.5
    plan = make_plan(opts, cpu, gpu_res, 100, local_cores=None)  # llama.cpp stays on CPU
    assert plan.summarizer == "actor" and plan.stt_actors == 4 and plan.llm_num_gpus == 0
    with pytest.raises(BatchError):
        make_plan(BatchOptions("in", "out", device="gpu"), cpu, {"CPU": 4.0}, 1, None)
    with pytest.raises(BatchError):
        make_plan(BatchOptions("in", "out", summarizer="vllm"), vllm, {"CPU": 4.0}, 1, None)


def test_vllm_branch_thins_long_transcripts_to_the_budget():
    short = "One. Two."
    assert fit_to_budget(short, 100) == short
    text = " ".join(f"Sentence number {i} is here." for i in range(2000))
    fitted = fit_to_budget(text, 500)
    assert len(fitted) <= 500 * 3.5 and fitted.startswith("Sentence number 0 ")
    assert "Sentence number 19" in fitted  # spread over the whole text, not only its start


def test_vllm_branch_builds_its_config_and_maps_rows_without_a_gpu():
    """The ray.data.llm branch cannot run here; its config and row functions can."""
    from app.core.schemas import summary_json_schema
    from app.core.settings import Settings
    from app.llm.summarize import DEFAULT_SYSTEM_PROMPT
    from pipelines.summarize_vllm import make_postprocess, make_preprocess, processor_config

    settings = Settings(llm_engine="vllm", llm_model="Qwen/Qwen2.5-0.5B-Instruct")
    config = processor_config(
        settings, "Qwen/Qwen2.5-0.5B-Instruct", engines=2, gpu_fraction=0.5, batch_size=16
    )
    assert config.placement_group_config["bundle_per_worker"]["GPU"] == 0.5
    assert config.should_continue_on_error and config.engine_kwargs["max_model_len"] == 4096

    pre = make_preprocess(settings, instruction="Be brief.")
    row = pre({"path": "/a.wav", "transcript_text": "We ship on Friday.", "error_code": None})
    assert row["path"] == "/a.wav" and row["messages"][0]["content"] == DEFAULT_SYSTEM_PROMPT
    assert row["messages"][1]["content"].endswith("Transcript:\nWe ship on Friday.")
    schema = json.loads(row["sampling_params"]["structured_outputs"]["json"])
    assert schema == summary_json_schema() and row["sampling_params"]["max_tokens"] == 512
    skipped = pre({"path": "/b.wav", "transcript_text": None, "error_code": "empty_file"})
    assert skipped["sampling_params"]["max_tokens"] == 1

    post = make_postprocess("qwen")
    answer = json.dumps({"summary": "Shipping.", "key_points": ["Friday"], "action_items": []})
    out = post(
        {
            **row,
            "generated_text": answer,
            "time_taken_llm": 0.2,
            "__inference_error__": "",
            "models": {"stt": "w"},
        }
    )
    assert (out["summary"], out["key_points"], out["models"]) == (
        "Shipping.",
        ["Friday"],
        {"stt": "w", "llm": "qwen"},
    )
    assert "messages" not in out and out["timings"]["summarize_s"] == 0.2
    broken = post({**row, "generated_text": "", "__inference_error__": "ValueError: too long"})
    assert broken["error_code"] == "summarize_failed"
    silent = post({**row, "transcript_text": "", "generated_text": "x", "__inference_error__": ""})
    assert "no speech" in silent["summary"].lower()
    assert post(skipped)["error_code"] == "empty_file" and post(skipped)["summary"] is None


def test_batch_command_registers_on_a_typer_app():
    import typer
    from typer.testing import CliRunner

    from pipelines.cli import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for flag in ("--input", "--output", "--format", "--force", "--record-tasks", "--tenant"):
        assert flag in result.output
    bad = CliRunner().invoke(app, ["--input", "x", "--output", "y", "--format", "csv"])
    assert bad.exit_code != 0


def test_working_dir_upload_leaves_out_venv_git_and_tests(tmp_path):
    from ray._private.runtime_env.packaging import _zip_files

    target = tmp_path / "pkg.zip"
    _zip_files(str(REPO), [], str(target), include_gitignore=True)
    names = zipfile.ZipFile(target).namelist()
    assert "pipelines/batch_summarize.py" in names and "app/speech/stt.py" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "tests/"))]
    assert target.stat().st_size < 5 * 2**20


# --- slow: the real job on the session's Ray head -------------------------------------


@pytest.fixture(scope="module")
def first_run(ray_cluster, mixed_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch_first")
    db_url = f"sqlite:///{tmp / 'aipp.db'}"
    env = job_env(ray_cluster, tmp, db_url)
    out = tmp / "out"
    report = run_job(ray_cluster, env, job_args(mixed_dir, out, "--tenant", "batch-test"))
    return {"report": report, "out": out, "env": env, "db_url": db_url}


def test_slow_every_file_gets_one_row_bad_files_get_errors(first_run, mixed_dir):
    report, out = first_run["report"], first_run["out"]
    files = sorted(p for p in mixed_dir.iterdir() if p.suffix != ".txt")
    assert report["files"] == len(files) == 6
    assert (report["processed"], report["ok"], report["failed"]) == (6, 3, 3)
    assert report["skipped"] == 0 and report["audio_s"] > 19
    frame = read_rows(out)
    assert len(frame) == len(files)
    rows = {Path(r["path"]).name: r for r in frame}
    assert set(rows) == {p.name for p in files}
    for path in files:
        assert rows[path.name]["sha256"] == sha256(path)
    assert JFK_PHRASE in words(rows["jfk.flac"]["transcript_text"])
    for name in GOOD:
        row = rows[name]
        assert row["status"] == "succeeded" and row["error_code"] is None
        assert row["summary"] and row["language"] == "en" and row["duration_s"] > 3
        assert len(row["segments"]) >= 1 and row["segments"][0]["text"]
        assert row["models"]["stt"] == "whisper-tiny.en" and row["models"]["llm"]
        assert row["timings"]["transcribe_s"] > 0 and row["timings"]["summarize_s"] > 0
    for name, codes in BAD.items():
        row = rows[name]
        assert row["status"] == "failed" and row["error_code"] in codes and row["error_message"]
        assert not row["transcript_text"]
    assert sorted(report["errors"]) == sorted({rows[n]["error_code"] for n in BAD})


def test_slow_results_are_recorded_as_tasks(first_run):
    from sqlmodel import Session, select

    from app.storage.sql.engine import make_engine
    from app.storage.sql.models import Task, Tenant

    frame = read_rows(first_run["out"])
    engine = make_engine(first_run["db_url"])
    try:
        with Session(engine) as session:
            tenant = session.exec(select(Tenant).where(Tenant.name == "batch-test")).one()
            tasks = session.exec(select(Task).where(Task.tenant_id == tenant.id)).all()
    finally:
        engine.dispose()
    assert first_run["report"]["tasks_recorded"] == len(tasks) == len(frame)
    by_id = {t.id: t for t in tasks}
    assert set(by_id) == {r["task_id"] for r in frame}
    for row in frame:
        task = by_id[row["task_id"]]
        assert task.source == "batch" and task.status == row["status"]
        assert task.audio_sha256 == row["sha256"] and task.audio_uri == row["path"]
        if row["status"] == "succeeded":
            assert task.result["transcript"]["text"] == row["transcript_text"]
            assert task.result["summary"]["summary"] == row["summary"]
        else:
            assert task.error_code == row["error_code"] and not task.result


def test_slow_rerun_processes_nothing_new(first_run, mixed_dir, ray_cluster):
    before = sorted(p.name for p in first_run["out"].glob("part-*"))
    report = run_job(
        ray_cluster,
        first_run["env"],
        job_args(mixed_dir, first_run["out"], "--tenant", "batch-test"),
    )
    assert report["files"] == 6
    assert (report["skipped"], report["processed"], report["reused"]) == (6, 0, 0)
    assert report["parts_written"] == 0 and report["tasks_recorded"] == 0
    assert sorted(p.name for p in first_run["out"].glob("part-*")) == before


def test_slow_killed_run_is_finished_by_the_next_one(ray_cluster, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav", "no_speech.wav")
    for name in names:
        (src / name).write_bytes((DATA / name).read_bytes())
    env = job_env(ray_cluster, tmp_path)
    args = job_args(src, out, "--rows-per-file", "1", "--flush-interval-s", "0")
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.batch_summarize",
            *args,
            "--address",
            ray_cluster.gcs_address,
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not list(out.glob("part-*")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: like a lost node
        proc.wait(timeout=60)
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    first = pd.read_parquet(out)
    assert 1 <= len(first) < len(names), "the job finished before it could be killed"
    assert not list(out.glob(".*"))  # no torn part file is left behind

    report = run_job(ray_cluster, env, args)
    assert report["skipped"] == len(first)
    assert report["processed"] == len(names) - len(first)
    final = pd.read_parquet(out)
    assert sorted(final["path"]) == sorted(str(src / n) for n in names)  # one row per file
    assert set(final["status"]) == {"succeeded"}
    assert set(first["run_id"]) < set(final["run_id"])  # done rows were kept, not redone
    silent = final[final["path"].str.endswith("no_speech.wav")].iloc[0]
    assert silent["transcript_text"] == "" and "no speech" in silent["summary"].lower()


def test_slow_ray_job_submit_runs_the_pipeline_on_the_cluster(ray_cluster, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "jfk.flac").write_bytes((DATA / "jfk.flac").read_bytes())
    (src / "notes.wav").write_text("not audio")
    env = job_env(ray_cluster, tmp_path)
    entry = [
        sys.executable,
        "-m",
        "pipelines.batch_summarize",
        *job_args(src, out, "--format", "jsonl"),
    ]
    for _ in range(6):
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "ray"),
                "job",
                "submit",
                "--address",
                ray_cluster.dashboard_url,
                "--working-dir",
                str(REPO),
                "--",
                *entry,
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
        output = proc.stdout + proc.stderr
        # A head that has just started may not have its job agent registered yet; Ray
        # answers 500 "please try again later" and accepts nothing: do as it says.
        if "No available agent to submit job" not in output:
            break
        time.sleep(10)
    assert proc.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower()
    report = parse_report(proc.stdout)
    assert report is not None, output[-4000:]
    assert (report["files"], report["ok"], report["failed"]) == (2, 1, 1)
    lines = [
        json.loads(line)
        for p in sorted(out.glob("part-*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    rows = {Path(r["path"]).name: r for r in lines}
    assert set(rows) == {"jfk.flac", "notes.wav"}
    assert JFK_PHRASE in words(rows["jfk.flac"]["transcript_text"])
    assert rows["notes.wav"]["error_code"] == "unsupported_media"
