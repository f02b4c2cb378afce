"""The README quickstart, exactly as a new user runs it on a fresh machine.

`aipp serve` with the default config and no flags, an empty HOME (no ~/.ray, no model
cache), and Ray given the machine's real core count. It then answers /readyz and
summarizes the JFK clip. Slow (models load from scratch), so it runs first, while the
machine is otherwise idle (see conftest.py). The same running service is then checked for
what it leaves to other users (issue 26): private files, and no port beyond loopback
other than what its start-up table reports.
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

from app.cli.deploy import is_loopback, listeners
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
        _assert_private_tree(data)
        _assert_loopback_or_reported(proc.pid, env, log.read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_cluster(ray_tmp)


def _assert_private_tree(root: Path) -> None:
    """No file or directory of the service's data dir is open to group or others."""
    wide = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
            wide.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(root)}")
    assert (root / "aipp.db").is_file() and (root / "blobs").is_dir()  # the service made both
    assert not wide, wide


def _assert_loopback_or_reported(pid: int, env: dict[str, str], log: str) -> None:
    """Every listening TCP socket of `aipp serve`'s processes (Ray's daemons and workers
    descend from it) is on loopback, except Serve replicas' inter-deployment gRPC ports,
    which Ray 2.60 binds to [::] with no setting, and which the start-up table names."""
    found = listeners(pid)
    loopback = {item.port for item in found if is_loopback(item.host)}
    # Not vacuous: the API, the dashboard and Ray's own servers are all in the list.
    assert {int(env["AIPP_PORT"]), int(env["AIPP_DASHBOARD_PORT"])} <= loopback, found
    assert any(item.process.startswith(("gcs_server", "raylet")) for item in found), found
    exposed = [item for item in found if not is_loopback(item.host)]
    assert all(item.process.startswith("ServeReplica:") for item in exposed), exposed
    assert "Beyond loopback" in log, log[-4000:]
    if exposed:
        assert any(f"{item.address} {item.process}" in log for item in exposed), log[-4000:]
        assert "docs/security.md" in log
    else:
        assert "every Ray and Serve port is on 127.0.0.1" in log
