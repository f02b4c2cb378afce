"""What a brand-new machine lacks: a Ray token, and room for an oversized config."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from app.cli.deploy import DEFAULT_CONFIG, fit_problem, load_config
from app.core import ray_auth
from tests.cluster_fixtures import BIN, REPO, free_port, stop_cluster


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    return home


def test_token_is_generated_private_and_stable(empty_home):
    path = ray_auth.ensure_ray_token()
    assert path == empty_home / ".ray" / "auth_token"
    token = path.read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ray_auth.ensure_ray_token() == path
    assert path.read_text().strip() == token  # never replaced once it exists


def test_a_world_readable_token_is_tightened(empty_home):
    path = empty_home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("a" * 32)
    path.chmod(0o644)
    ray_auth.ensure_ray_token()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "a" * 32


def test_custom_token_path_and_env_token(empty_home, tmp_path, monkeypatch):
    custom = tmp_path / "secrets" / "ray_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(custom))
    assert ray_auth.ensure_ray_token() == custom
    assert stat.S_IMODE(custom.stat().st_mode) == 0o600
    assert custom.read_text().strip()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-environment")
    assert ray_auth.ensure_ray_token() is None


def test_default_config_fits_a_two_core_machine():
    config = load_config(DEFAULT_CONFIG)
    assert fit_problem(config, {"CPU": 2.0, "memory": 16e9}) is None
    # Every deployment at max_replicas (the peak an early upscale can reach) fits too.
    assert fit_problem(config, {"CPU": 2.0}, peak=True) is None
    # ...and that check does bite: one more Summarizer replica would not fit.
    for dep in config["applications"][0]["deployments"]:
        if dep["name"] == "Summarizer":
            dep["autoscaling_config"]["max_replicas"] = 2
    problem = fit_problem(config, {"CPU": 2.0}, peak=True)
    assert problem is not None and "Summarizer: 2 ×" in problem


def test_an_oversized_config_names_the_deployment_and_resource():
    config = load_config(DEFAULT_CONFIG)
    for dep in config["applications"][0]["deployments"]:
        if dep["name"] == "Summarizer":
            dep["ray_actor_options"] = {"num_cpus": 4, "num_gpus": 1}
    problem = fit_problem(config, {"CPU": 2.0})
    assert problem is not None
    assert "Summarizer: 1 × {CPU=4, GPU=1}" in problem
    assert "GPU 1 needed, 0 in the cluster" in problem
    assert "CPU" in problem and "--num-cpus" in problem


@pytest.mark.slow
def test_serve_refuses_an_oversized_config_within_seconds(tmp_path):
    """No 600 s wait in DEPLOYING: `aipp serve` exits 2 and says what does not fit."""
    config = load_config(DEFAULT_CONFIG)
    for dep in config["applications"][0]["deployments"]:
        if dep["name"] == "Transcriber":
            dep["ray_actor_options"]["num_cpus"] = 64
    cfg = tmp_path / "big.yaml"
    cfg.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = Path(f"/tmp/afm-{os.getpid()}")
    ray_tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIPP_", "RAY_"))}
    env.update(
        HOME=str(home),
        TMPDIR=str(ray_tmp),
        AIPP_DATA_DIR=str(tmp_path / "data"),
        AIPP_PORT=str(free_port()),
        AIPP_DASHBOARD_PORT=str(free_port()),
    )
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(BIN / "aipp"), "serve", "--config", str(cfg)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop_cluster(ray_tmp)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "does not fit" in output and "Transcriber" in output, output
    assert "CPU" in output
    assert time.monotonic() - started < 300
