"""Metrics on Ray's Prometheus export, and request/task ids in the replicas' JSON logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core import logs, metrics
from tests.cluster_fixtures import REPO
from tests.conftest import DATA

serve = pytest.mark.serve


# --- Helpers ------------------------------------------------------------------------------


def dashboard_headers() -> dict[str, str]:
    """The cluster runs with token auth: the dashboard API wants ~/.ray/auth_token."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    token = os.environ.get("RAY_AUTH_TOKEN") or (
        token_file.read_text().strip() if token_file.exists() else ""
    )
    return {"Authorization": f"Bearer {token}"} if token else {}


def metrics_endpoints(ray_cluster) -> list[str]:
    """Each node's metrics export (Prometheus text), as the dashboard reports it."""
    resp = httpx.get(
        f"{ray_cluster.dashboard_url}/nodes",
        params={"view": "summary"},
        headers=dashboard_headers(),
        timeout=30,
    )
    resp.raise_for_status()
    urls = []
    for node in resp.json()["data"]["summary"]:
        raylet = node["raylet"]
        ip = raylet.get("nodeManagerAddress") or node["ip"]
        urls.append(f"http://{ip}:{raylet['metricsExportPort']}/metrics")
    assert urls
    return urls


def scrape(urls: list[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``{sample name: [(labels, value), ...]}`` over every node."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for url in urls:
        text = httpx.get(url, timeout=30).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def poll(check, timeout_s: float = 120, every_s: float = 2.0):
    """Call ``check()`` until it returns a truthy value or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    return last


def serve_log_dir(ray_cluster) -> Path:
    return ray_cluster.temp_dir / "session_latest" / "logs" / "serve"


def log_records(ray_cluster, deployment: str) -> list[dict]:
    records = []
    for path in sorted(serve_log_dir(ray_cluster).glob(f"replica_*_{deployment}_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line still being written
    return records


# --- Metrics --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth(api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@serve
def test_pipeline_metrics_on_ray_export(service, ray_cluster, auth):
    # Unique audio: a cached result would skip the models (and their metrics).
    files = {"file": ("jfk.wav", unique_wav())}
    resp = httpx.post(f"{service.url}/v1/summarize", files=files, headers=auth, timeout=600)
    assert resp.status_code == 200, resp.text
    httpx.get(f"{service.url}/v1/models", headers=auth, timeout=60).raise_for_status()
    urls = metrics_endpoints(ray_cluster)

    def ready():
        s = scrape(urls)
        want = [
            total(s, "ray_aipp_transcriptions_total"),
            total(s, "ray_aipp_audio_seconds_total") >= 10.9,
            total(s, "ray_aipp_stage_seconds_count", stage="decode"),
            total(s, "ray_aipp_stage_seconds_count", stage="transcribe"),
            total(s, "ray_aipp_stage_seconds_count", stage="summarize"),
            total(s, "ray_aipp_real_time_factor_count"),
            total(s, "ray_aipp_llm_tokens_total", direction="in", kind="summary"),
            total(s, "ray_aipp_llm_tokens_total", direction="out", kind="summary"),
            total(s, "ray_aipp_llm_tokens_per_second_count", kind="summary"),
            total(s, "ray_aipp_openai_requests_total", endpoint="models", status="200"),
        ]
        return s if all(want) else None

    samples = poll(ready)
    assert samples, "our metrics did not reach the Ray metrics export in time"
    # Histograms carry sums and buckets too, with Serve's deployment tag.
    assert total(samples, "ray_aipp_stage_seconds_sum", stage="transcribe") > 0
    assert total(samples, "ray_aipp_real_time_factor_sum") > 0
    buckets = samples["ray_aipp_stage_seconds_bucket"]
    assert {lab["deployment"] for lab, _ in buckets} >= {"Transcriber", "Summarizer"}
    # Serve's own queue metrics, which the Grafana dashboard also charts.
    assert "ray_serve_num_ongoing_requests_at_replicas" in samples
    assert "ray_serve_deployment_queued_queries" in samples


@serve
def test_openai_routes_count_requests_by_status(service, ray_cluster, auth):
    bad = httpx.post(
        f"{service.url}/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        headers=auth,
        timeout=60,
    )
    assert bad.status_code == 404
    urls = metrics_endpoints(ray_cluster)

    def counted():
        s = scrape(urls)
        return (
            s if total(s, "ray_aipp_openai_requests_total", endpoint="chat", status="404") else None
        )

    samples = poll(counted)
    assert samples
    assert total(samples, "ray_aipp_openai_request_seconds_count", endpoint="chat") > 0


def test_metric_names_are_documented():
    doc = (REPO / "docs" / "observability.md").read_text()
    dashboard = (REPO / "cluster" / "grafana" / "aipp-dashboard.json").read_text()
    json.loads(dashboard)
    for name, exported in metrics.METRIC_NAMES.items():
        assert exported[0].removesuffix("_bucket") in doc, name
        assert f"ray_{name}" in dashboard, name
    for serve_metric in (
        "ray_serve_deployment_queued_queries",
        "ray_serve_num_ongoing_requests_at_replicas",
    ):
        assert serve_metric in dashboard


def test_recorders_are_noops_without_ray():
    # This test process is not connected to Ray: nothing to record, and nothing raises.
    metrics.record_transcription(0.1, 1.0, 11.0)
    metrics.record_summary(2.0, 100, 50)
    metrics.record_chat(1.0, 10, 5)
    metrics.record_task_final("succeeded")
    metrics.set_queued_tasks(3)
    metrics.record_cache(True)
    metrics.record_rate_limited()
    metrics.record_webhook_failure()
    metrics.record_degraded("llm")
    metrics.record_openai_request("chat", 200, 0.1)


# --- Logs ----------------------------------------------------------------------------------


def test_log_context_fields_in_ray_json_format():
    from ray._common.formatters import JSONFormatter

    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(JSONFormatter().format(record))

    base = logging.getLogger("aipp.test.logs")
    base.propagate = False
    base.setLevel(logging.INFO)
    handler = Capture()
    base.addHandler(handler)
    try:
        log = logs.get_logger("aipp.test.logs")
        log.info("no context")
        with logs.log_context(task_id="t-1"):
            assert logs.current_task_id() == "t-1"
            log.info("in task")
            with logs.log_context(stage="transcribe"):
                log.info("nested", extra=logs.log_fields(request_id="r-9"))
        assert logs.current_task_id() is None
    finally:
        base.removeHandler(handler)
    first, second, third = (json.loads(r) for r in records)
    assert "task_id" not in first
    assert second["task_id"] == "t-1" and second["message"] == "in task"
    assert third["task_id"] == "t-1" and third["stage"] == "transcribe"
    assert third["request_id"] == "r-9"  # outside Serve, an explicit request id is kept


def unique_wav() -> bytes:
    """jfk.flac as a WAV with a random first sample, so no result cache can answer it."""
    import io
    import wave

    import numpy as np

    from app.speech.audio import decode

    pcm = decode((DATA / "jfk.flac").read_bytes())
    pcm16 = (np.clip(pcm, -1, 1) * 32767).astype("<i2")
    pcm16[0] = np.random.randint(-100, 100)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm16.tobytes())
    return buf.getvalue()


def lines_with(ray_cluster, deployment: str, key: str, value: str, prefix: str) -> list[dict]:
    return [
        r
        for r in log_records(ray_cluster, deployment)
        if r.get(key) == value and r.get("message", "").startswith(prefix)
    ]


@serve
def test_request_id_reaches_both_deployments_logs(service, ray_cluster, auth):
    """A client's X-Request-ID is on the Ingress's, the Transcriber's and the Summarizer's lines."""
    rid = f"aipp-test-{uuid.uuid4().hex[:12]}"
    headers = {"X-Request-ID": rid, **auth}
    stt = httpx.post(
        f"{service.url}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", (DATA / "jfk.flac").read_bytes())},
        data={"model": "whisper-1"},
        headers=headers,
        timeout=600,
    )
    assert stt.status_code == 200, stt.text
    assert stt.headers["x-request-id"] == rid
    chat = httpx.post(
        f"{service.url}/v1/chat/completions",
        json={
            "model": "qwen2.5-0.5b-instruct-q4_k_m",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
        },
        headers=headers,
        timeout=600,
    )
    assert chat.status_code == 200, chat.text
    assert chat.headers["x-request-id"] == rid

    def find(deployment, prefix):
        return poll(
            lambda: lines_with(ray_cluster, deployment, "request_id", rid, prefix),
            timeout_s=30,
            every_s=1,
        )

    transcriber = find("Transcriber", "transcribed")
    assert transcriber, f"no Transcriber log line with request_id {rid}"
    assert transcriber[0]["deployment"].endswith("Transcriber")
    assert find("Summarizer", "chat completion"), f"no Summarizer line with request_id {rid}"
    assert find("Ingress", "openai transcription"), f"no Ingress line with request_id {rid}"


@serve
def test_task_id_reaches_transcriber_logs(service, ray_cluster, auth):
    """/v1/summarize runs as a task: the Transcriber's lines carry its task id (X-Task-ID)."""
    resp = httpx.post(
        f"{service.url}/v1/summarize",
        files={"file": ("jfk.wav", unique_wav())},
        headers=auth,
        timeout=600,
    )
    assert resp.status_code == 200, resp.text
    task_id = resp.headers["x-task-id"]
    assert task_id
    lines = poll(
        lambda: lines_with(ray_cluster, "Transcriber", "task_id", task_id, "transcribed"),
        timeout_s=30,
        every_s=1,
    )
    assert lines, f"no Transcriber log line with task_id {task_id}"


@serve
def test_task_id_reaches_summarizer_logs(service, ray_cluster):
    """A caller holding a handle passes task_id=...; the Summarizer's lines carry it."""
    task_id = f"task-{uuid.uuid4().hex[:12]}"
    script = textwrap.dedent(f"""
        import ray
        from ray import serve
        ray.init(address={ray_cluster.gcs_address!r}, namespace="serve", log_to_driver=False)
        llm = serve.get_deployment_handle("Summarizer", app_name="aipp")
        messages = [{{"role": "user", "content": "Say hi."}}]
        llm.chat.remote(messages, 4, 0.0, task_id={task_id!r}).result(timeout_s=300)
        llm.summarize.remote("We agreed to ship on Friday.", None, task_id={task_id!r}).result(
            timeout_s=300
        )
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=ray_cluster.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for prefix in ("chat completion", "summarized"):
        lines = poll(
            lambda p=prefix: lines_with(ray_cluster, "Summarizer", "task_id", task_id, p),
            timeout_s=30,
            every_s=1,
        )
        assert lines, f"no Summarizer '{prefix}' line with task_id {task_id}"
