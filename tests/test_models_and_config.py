"""Model resolution and start-up checks: bad settings stop early with the setting named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from app.core.model_assets import (
    QWEN_GGUF_SHA256,
    QWEN_GGUF_SIZE,
    ModelError,
    _sha256_file,
    assemble_bundled_gguf,
    resolve_llm_model,
    resolve_stt_model,
)

REPO = Path(__file__).resolve().parent.parent
AIPP = Path(sys.executable).parent / "aipp"


def test_serve_config_parses_with_rays_schema():
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    deployments = {d.name: d for d in schema.applications[0].deployments}
    assert set(deployments) == {"Ingress", "TaskRunner", "Transcriber", "Summarizer", "Diarizer"}
    for dep in deployments.values():
        auto = dep.autoscaling_config
        assert isinstance(auto, dict)
        for key in (
            "min_replicas",
            "max_replicas",
            "target_ongoing_requests",
            "upscale_delay_s",
            "downscale_delay_s",
        ):
            assert key in auto, f"{dep.name} lacks {key}"
        assert dep.max_queued_requests > 0
        assert dep.max_ongoing_requests > 0
        assert dep.ray_actor_options.num_cpus is not None
    assert schema.http_options.request_timeout_s >= 600


def test_bundled_gguf_is_assembled_and_verified(tmp_path):
    path = assemble_bundled_gguf(tmp_path)
    assert path.stat().st_size == QWEN_GGUF_SIZE
    assert _sha256_file(path) == QWEN_GGUF_SHA256
    # A second call trusts the verified marker and returns the same file.
    assert assemble_bundled_gguf(tmp_path) == path


def test_corrupt_gguf_is_reassembled_not_trusted(tmp_path):
    path = assemble_bundled_gguf(tmp_path)
    with path.open("r+b") as f:
        f.seek(1000)
        f.write(b"garbage")
    # The marker no longer matches the file's mtime, so it is rebuilt and re-verified.
    rebuilt = assemble_bundled_gguf(tmp_path)
    assert _sha256_file(rebuilt) == QWEN_GGUF_SHA256


def test_llm_path_errors_name_the_setting(tmp_path):
    with pytest.raises(ModelError) as missing:
        resolve_llm_model("llama_cpp", str(tmp_path / "nope.gguf"), tmp_path)
    assert missing.value.setting == "AIPP_LLM_MODEL"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_llm_model("llama_cpp", str(bad), tmp_path)


def test_stt_errors_name_the_setting(tmp_path):
    with pytest.raises(ModelError) as exc:
        resolve_stt_model(str(tmp_path / "missing-dir"), tmp_path)
    assert exc.value.setting == "AIPP_STT_MODEL"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="model.bin"):
        resolve_stt_model(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ModelError, match="unknown bundled"):
        resolve_stt_model("bundled:large-v9", tmp_path)


def test_bundled_tiny_and_base_resolve(tmp_path):
    tiny = resolve_stt_model("bundled:tiny.en", tmp_path)
    assert Path(tiny.path, "model.bin").is_file()
    base = resolve_stt_model("bundled:base", tmp_path)
    assert Path(base.path, "model.bin").stat().st_size > 100_000_000


def test_hub_id_passes_through(tmp_path):
    resolved = resolve_stt_model("Systran/faster-whisper-small", tmp_path)
    assert resolved.path == "Systran/faster-whisper-small" and not resolved.local


def test_aipp_serve_refuses_a_bad_model_before_starting_ray(tmp_path):
    env = {
        "PATH": str(AIPP.parent),
        "HOME": str(tmp_path),
        "AIPP_LLM_MODEL": str(tmp_path / "missing.gguf"),
        "AIPP_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [str(AIPP), "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "AIPP_LLM_MODEL" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
