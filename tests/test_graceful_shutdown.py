"""SIGTERM to `aipp serve` with a task in flight drains instead of dumping a stack (issue 23).

One real `aipp serve` with its own local Ray (not the session's head: `serve.shutdown`
there would take down the other tests' app), one long real meeting submitted, SIGTERM
while it transcribes. The process must exit 0 within AIPP_SHUTDOWN_GRACE_S plus the
local Ray's own stop, print no traceback, and leave the task finished or back in
`queued` with no lease holder: never lost, never `transcribing` for a dead worker.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster_fixtures import BIN, REPO, free_port, stop_cluster
from tests.conftest import DATA

pytestmark = pytest.mark.slow

GRACE_S = 30
RAY_STOP_MARGIN_S = 30  # the local Ray's raylet, GCS and dashboard stop on 2 busy cores
MEETING = DATA / "meetings" / "w3c_ccg_2024-01-23.ogg"  # 12.8 min: minutes on CPU


def _env(data: Path, ray_tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIPP_", "RAY_ADDRESS"))}
    env.update(
        TMPDIR=str(ray_tmp),
        AIPP_DATA_DIR=str(data),
        AIPP_PORT=str(free_port()),
        AIPP_DASHBOARD_PORT=str(free_port()),
        AIPP_AUTH="off",
        AIPP_WORKER_CONCURRENCY="1",
        AIPP_TASK_LEASE_S="6",
        AIPP_SHUTDOWN_GRACE_S=str(GRACE_S),
    )
    return env


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"aipp serve exited:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail(f"/readyz never answered 200:\n{log.read_text()[-4000:]}")


def _wait_status(url: str, task_id: str, wanted: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/v1/tasks/{task_id}", timeout=10).json()["status"]
        if status in wanted:
            return status
        time.sleep(0.5)
    pytest.fail(f"task {task_id} still {status} after {timeout_s}s")


def test_sigterm_drains_a_task_in_flight_and_exits_0(tmp_path):
    ray_tmp = Path(f"/tmp/ags-{os.getpid()}")  # short: Ray's unix socket paths are limited
    ray_tmp.mkdir(exist_ok=True)
    data = tmp_path / "data"
    env = _env(data, ray_tmp)
    url = f"http://127.0.0.1:{env['AIPP_PORT']}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "aipp"), "serve"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(proc, url, log, timeout_s=600)
        with MEETING.open("rb") as f:
            resp = httpx.post(f"{url}/v1/tasks", files={"file": (MEETING.name, f)}, timeout=120)
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["id"]
        # In flight: a replica holds its lease and Whisper is decoding it.
        assert _wait_status(url, task_id, {"transcribing"}, timeout_s=120) == "transcribing"
        time.sleep(2)  # a decode under way, not just the claim

        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=GRACE_S + RAY_STOP_MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"aipp serve still running after SIGTERM:\n{log.read_text()[-4000:]}")
        took = time.monotonic() - signalled
        output = log.read_text()
        print(f"SIGTERM to exit: {took:.1f}s (exit {code})")
        assert code == 0, output[-4000:]
        assert "Traceback" not in output, output[-6000:]
        assert "stopped in" in output, output[-4000:]  # it drained, not just died

        db = sqlite3.connect(data / "aipp.db")
        try:
            status, owner, attempts = db.execute(
                "SELECT status, lease_owner, attempts FROM task WHERE id = ?", (task_id,)
            ).fetchone()
        finally:
            db.close()
        print(f"task after the drain: {status}, attempts {attempts}")
        # Handed back at once (no attempt spent, no lease left to expire) or finished.
        assert status in ("queued", "succeeded"), (status, owner)
        if status == "queued":
            assert owner is None, owner
            assert attempts == 0, attempts
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        stop_cluster(ray_tmp)


def test_sigterm_while_models_load_exits_0_without_a_dump(tmp_path):
    """The case issue 23 hit: SIGTERM during start-up, where Ray's core worker handler
    printed ``*** SIGTERM received ***`` with a stack and the process died with 15."""
    ray_tmp = Path(f"/tmp/agt-{os.getpid()}")
    ray_tmp.mkdir(exist_ok=True)
    env = _env(tmp_path / "data", ray_tmp)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "aipp"), "serve"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        while "deploying the Serve application" not in log.read_text():  # Ray is up
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        time.sleep(2)  # replicas are loading the models
        assert "ready in" not in log.read_text()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE_S + RAY_STOP_MARGIN_S)
        output = log.read_text()
        assert code == 0, output[-4000:]
        assert "SIGTERM received" not in output and "Traceback" not in output, output[-4000:]
        assert "stopped in" in output, output[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        stop_cluster(ray_tmp)
