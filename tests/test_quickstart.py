"""The README quickstart, exactly as a new user runs it on a fresh machine.

`aipp serve` with the default config and no flags, an empty HOME (no ~/.ray, no model
cache), and Ray given the machine's real core count. It then answers /readyz and
summarizes the JFK clip. Slow (models load from scratch), so it runs first, while the
machine is otherwise idle (see conftest.py).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster_fixtures import BIN, REPO, free_port, stop_cluster
from tests.conftest import DATA, JFK_PHRASE

pytestmark = pytest.mark.slow


def _fresh_env(home: Path, tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIPP_", "RAY_")) and k not in ("HOME", "TMPDIR", "XDG_CACHE_HOME")
    }
    # Ports are settings, not flags: free ones keep a developer's own `make run` safe.
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        AIPP_PORT=str(free_port()),
        AIPP_DASHBOARD_PORT=str(free_port()),
    )
    return env


def test_readme_quickstart_on_an_empty_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = Path(f"/tmp/aqs-{os.getpid()}")  # short: Ray's unix socket paths are limited
    ray_tmp.mkdir(exist_ok=True)
    env = _fresh_env(home, ray_tmp)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "aipp"), "serve"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{env['AIPP_PORT']}"
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"aipp serve exited:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(3)
        else:
            pytest.fail(f"/readyz never answered 200:\n{log.read_text()[-4000:]}")

        with (DATA / "jfk.flac").open("rb") as f:
            resp = httpx.post(f"{url}/v1/summarize", files={"file": ("jfk.flac", f)}, timeout=600)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert JFK_PHRASE in body["transcript"]["text"].lower()
        assert body["summary"]["summary"].strip()

        token = home / ".ray" / "auth_token"
        assert token.is_file(), "aipp serve should have created the Ray token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        data = home / ".local" / "share" / "aipp"  # the database holds webhook secrets
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert (home / ".cache" / "aipp").is_dir()  # the GGUF was assembled from scratch
        # The user saw progress while models loaded, then a verdict once every
        # deployment (the Diarizer loads last) is up; /readyz needs only the core path.
        assert "application DEPLOYING" in log.read_text()
        deadline = time.monotonic() + 600
        while "ready in" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, f"aipp serve exited:\n{log.read_text()[-4000:]}"
            time.sleep(3)
        assert "ready in" in log.read_text(), log.read_text()[-4000:]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_cluster(ray_tmp)
