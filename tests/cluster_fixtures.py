"""One real Ray head per test session, shared by the Serve app and the batch jobs.

``ray start --head`` runs as its own process group, like on a real node; the
service (``aipp serve --address``) and ``ray job submit`` both join it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    gcs_address: str
    dashboard_url: str
    temp_dir: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RAY_ADDRESS"] = self.gcs_address
        env["RAY_AUTH_MODE"] = "token"
        return env


def start_head(temp_dir: Path, num_cpus: int) -> RayCluster:
    """`ray start --head` on loopback with the dashboard, in its own temp dir."""
    from app.core.ray_auth import ensure_ray_token

    ensure_ray_token()  # `ray start` reads a token but never creates one
    port, dash = free_port(), free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token")
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=180)
    cluster = RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{cluster.dashboard_url}/api/version", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            time.sleep(1)
    return cluster


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    temp_dir = Path(f"/tmp/aipp-ray-{os.getpid()}")  # short: Ray's unix sockets have a path limit
    # Logical CPUs: Serve replicas and batch actors share 2 physical cores here.
    cluster = start_head(temp_dir, num_cpus=8)
    yield cluster
    stop_cluster(temp_dir)


def stop_cluster(temp_dir: Path) -> None:
    """Stop only this cluster's processes (`ray stop` would stop every cluster on the host)."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in proc.info["cmdline"] or []):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in mine:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class Service:
    url: str
    dashboard_port: int
    data_dir: Path
    env: dict[str, str]
    log: Path


def start_service(
    cluster: RayCluster,
    data_dir: Path,
    extra_env: dict[str, str],
    log: Path,
    timeout_s: float = 600,
    serve_args: list[str] | None = None,
) -> tuple[Service, subprocess.Popen]:
    port = free_port()
    dash_port = int(cluster.dashboard_url.rsplit(":", 1)[1])
    env = cluster.env()
    env.update(
        {
            "AIPP_DATA_DIR": str(data_dir),
            "AIPP_PORT": str(port),
            "AIPP_DASHBOARD_PORT": str(dash_port),
            "AIPP_AUTH": "off",
        }
    )
    env.update(extra_env)
    logf = log.open("w")
    proc = subprocess.Popen(
        [str(BIN / "aipp"), "serve", "--address", cluster.gcs_address, *(serve_args or [])],
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"aipp serve exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(2)
    else:
        proc.terminate()
        raise RuntimeError(f"service not ready in {timeout_s}s:\n{log.read_text()[-4000:]}")
    return Service(url, dash_port, data_dir, env, log), proc


def stop_service(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
