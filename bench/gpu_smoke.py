"""GPU smoke check: one NVIDIA GPU, no network, a copy of the working tree, a few minutes.

Two steps, because the GPU machine can reach nothing:

    # here (with the venv): models as <= 60 MiB parts with SHA-256 sums
    python -m bench.gpu_smoke prepare --out .gpu_smoke [--llm-dir /path/to/Qwen2.5-1.5B-Instruct]

    # there (the folder travels with the tree; docs/benchmarks.md has the whole how-to)
    python -m bench.gpu_smoke run --models .gpu_smoke --out "$OUT"

``run`` re-assembles every model from its parts (each part and the whole file are
checked against their sums), then checks that:

1. the Transcriber's ``SpeechToText`` picks ``cuda`` / ``float16`` and the batched
   pipeline by itself (``AIPP_STT_DEVICE=auto``, ``AIPP_STT_COMPUTE_TYPE=default``);
2. ``tests/data/jfk.flac`` transcribes to the known sentence, with word timestamps
   inside the clip and in order;
3. speed: RTF of one clip and of a batch of ``--copies`` clips (``transcribe_many``,
   what the Transcriber's ``@serve.batch`` runs), and GPU memory from ``nvidia-smi``;
4. if vLLM is importable and an LLM was prepared: ``VLLMEngine`` loads it from the
   local directory with the hub off and the summarizer returns a schema-valid
   summary of the jfk transcript; start-up seconds and tokens/s for
   ``enforce_eager`` off and on (the trade-off ``AIPP_LLM_ENFORCE_EAGER`` sets).

It prints one JSON report (and writes ``gpu_smoke.json`` under ``--out``); exit 1
when a check fails. Not a test: tests never need a GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JFK = REPO / "tests" / "data" / "jfk.flac"
JFK_PHRASE = "ask not what your country can do for you"
PART_MIB = 60  # the most one carried file may hold
SUMS = "SHA256SUMS.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- carrying models as parts ---------------------------------------------------------


def split_dir(src: Path, out: Path, part_mib: int = PART_MIB) -> dict:
    """Copy ``src`` into ``out`` with every file cut into parts of at most ``part_mib``."""
    out.mkdir(parents=True, exist_ok=True)
    part_bytes = part_mib * 2**20
    files = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        parts = []
        with path.open("rb") as f:
            for i, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
                name = f"{rel.replace('/', '__')}.part{i:03d}"
                (out / name).write_bytes(block)
                parts.append({"name": name, "sha256": hashlib.sha256(block).hexdigest()})
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path), "parts": parts}
    (out / SUMS).write_text(json.dumps(files, indent=1))
    return files


def assemble_dir(parts_dir: Path, target: Path, root: Path | None = None) -> Path:
    """Re-assemble what :func:`split_dir` wrote; every part and file checked by SHA-256.

    Parts are looked up anywhere under ``root`` (default ``parts_dir``), so groups
    carried by separate device calls (``prepare --groups``) assemble alike.
    """
    files = json.loads((parts_dir / SUMS).read_text())
    where = {p.name: p for p in (root or parts_dir).rglob("*.part[0-9][0-9][0-9]")}
    for rel, meta in files.items():
        dest = target / rel
        if dest.is_file() and _sha256(dest) == meta["sha256"]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".tmp")
        with tmp.open("wb") as out:
            for part in meta["parts"]:
                if part["name"] not in where:
                    raise SystemExit(f"missing part {part['name']} (was every group carried?)")
                data = where[part["name"]].read_bytes()
                if hashlib.sha256(data).hexdigest() != part["sha256"]:
                    raise SystemExit(f"corrupt part {part['name']}: checksum mismatch")
                out.write(data)
        if _sha256(tmp) != meta["sha256"]:
            raise SystemExit(f"{rel}: re-assembled file does not match its checksum")
        os.replace(tmp, dest)
    return target


def prepare(out: Path, llm_dir: Path | None, part_mib: int = PART_MIB, groups: int = 1) -> dict:
    """Split the models into ``out``; with ``groups`` > 1, parts spread over ``out/gN``
    folders of similar size, each small enough to travel in one device call."""
    from app.core.model_assets import resolve_stt_model
    from app.core.settings import Settings

    settings = Settings()
    stt = resolve_stt_model(settings.stt_model, settings.cache_dir)
    if out.exists():
        shutil.rmtree(out)
    report = {"stt": stt.name, "stt_files": len(split_dir(Path(stt.path), out / "stt", part_mib))}
    (out / "stt" / "NAME").write_text(stt.name)
    if llm_dir is not None:
        report["llm_files"] = len(split_dir(llm_dir, out / "llm", part_mib))
        (out / "llm" / "NAME").write_text(llm_dir.name)
    if groups > 1:
        loads = [0] * groups
        for part in sorted(out.glob("*/*.part*"), key=lambda p: -p.stat().st_size):
            g = loads.index(min(loads))
            loads[g] += part.stat().st_size
            dest = out / f"g{g + 1}" / part.parent.name
            dest.mkdir(parents=True, exist_ok=True)
            part.rename(dest / part.name)
        report["group_mib"] = [round(x / 2**20, 1) for x in loads]
    sizes = [p.stat().st_size for p in out.rglob("*") if p.is_file()]
    report["largest_file_mib"] = round(max(sizes) / 2**20, 1)
    report["total_mib"] = round(sum(sizes) / 2**20, 1)
    return report


# --- the checks -----------------------------------------------------------------------


def gpu_memory_mib() -> dict | None:
    try:
        out = (
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
    name, used, total, driver = (x.strip() for x in out.split(","))
    return {"gpu": name, "used_mib": int(used), "total_mib": int(total), "driver": driver}


def check_whisper(model_dir: Path, name: str, copies: int, report: dict) -> str:
    from app.speech.audio import decode
    from app.speech.stt import SpeechToText, SttOptions

    before = gpu_memory_mib()
    t0 = time.perf_counter()
    stt = SpeechToText(str(model_dir), name, device="auto", compute_type="default", batch_size=8)
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
        "device_cuda": stt.device == "cuda",
        "compute_float16": stt.compute_type == "float16",
        "batched_pipeline": stt.batched is not None,
        "jfk_text": JFK_PHRASE in text,
        "word_timestamps": bool(words)
        and all(0 <= w.start <= w.end <= jfk.duration_s + 0.05 for w in words)
        and all(a.start <= b.start for a, b in zip(words, words[1:], strict=False)),
        "batch_texts": all(JFK_PHRASE in t.text.lower().replace(",", "") for t in many),
    }
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
        "gpu_memory_model_mib": after["used_mib"] - before["used_mib"]
        if before and after
        else None,
        "checks": checks,
    }
    return jfk.text


def check_vllm(llm_dir: Path, transcript: str, report: dict) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        report["vllm"] = {"skipped": "vllm is not installed"}
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from app.core.schemas import Summary
    from app.core.settings import Settings
    from app.llm.engines import build_engine
    from app.llm.summarize import TranscriptSummarizer

    runs = {}
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
        out = TranscriptSummarizer(engine).summarize(transcript)
        t0 = time.perf_counter()
        gen = engine.generate(
            [{"role": "user", "content": "Count from one to fifty in words."}],
            max_tokens=256,
            temperature=0.0,
        )
        gen_s = time.perf_counter() - t0
        summary = Summary.model_validate(out.model_dump(include=set(Summary.model_fields)))
        runs["eager" if eager else "cuda_graphs"] = {
            "start_s": round(start_s, 1),
            "tokens_per_s": round(gen.completion_tokens / gen_s, 1),
            "summary": summary.summary,
            "gpu": gpu_memory_mib(),
        }
        engine.close()  # frees the GPU for the next run
    report["vllm"] = {"model_dir": str(llm_dir), **runs, "checks": {"schema_valid_summary": True}}


def run(models: Path, out: Path | None, copies: int) -> int:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "aipp-gpu-smoke"
    report: dict = {"gpu": gpu_memory_mib(), "python": sys.version.split()[0]}
    stt_dir = assemble_dir(models / "stt", work / "stt", root=models)
    name = (models / "stt" / "NAME").read_text().strip()
    try:
        text = check_whisper(stt_dir, name, copies, report)
        if (models / "llm" / SUMS).is_file():
            check_vllm(assemble_dir(models / "llm", work / "llm", root=models), text, report)
    except Exception as exc:  # report what broke, as a failed check
        report["error"] = f"{type(exc).__name__}: {exc}"
    checks = {
        **report.get("whisper", {}).get("checks", {}),
        **report.get("vllm", {}).get("checks", {}),
    }
    report["ok"] = bool(checks) and all(checks.values()) and "error" not in report
    text_out = json.dumps(report, indent=2, default=str)
    print(text_out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_smoke.json").write_text(text_out)
    return 0 if report["ok"] else 1


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU smoke check (see the module docstring).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="split the models into <= 60 MiB parts with sums")
    p.add_argument("--out", type=Path, default=REPO / ".gpu_smoke")
    p.add_argument("--llm-dir", type=Path, default=None, help="local HF checkpoint for vLLM")
    p.add_argument("--part-mib", type=int, default=PART_MIB, help="largest part (<= 60)")
    p.add_argument("--groups", type=int, default=1, help="spread parts over N carry folders")
    r = sub.add_parser("run", help="on the GPU machine: assemble, check, report")
    r.add_argument("--models", type=Path, default=REPO / ".gpu_smoke")
    r.add_argument("--out", type=Path, default=None)
    r.add_argument("--copies", type=int, default=8, help="clips in the batched pass")
    args = ap.parse_args()
    if args.cmd == "prepare":
        if not 1 <= args.part_mib <= PART_MIB:
            ap.error("--part-mib must be between 1 and 60")
        print(json.dumps(prepare(args.out, args.llm_dir, args.part_mib, args.groups), indent=2))
        return
    sys.exit(run(args.models, args.out, args.copies))


if __name__ == "__main__":
    main()
