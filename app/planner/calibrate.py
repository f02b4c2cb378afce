"""Measure this machine's Whisper and LLM throughput and turn it into a planner profile.

``aipp plan --calibrate`` runs the project's own model wrappers (``app.speech.stt`` and
``app.llm``, configured by ``AIPP_*`` settings) on a bundled speech clip and a fixed
prompt, then plans with the measured numbers instead of the catalog's estimates for
the chosen GPU type. The profile says what it was measured on (CPU model and core
count from /proc/cpuinfo, and the GPU when one is visible).

The measuring (:func:`measure`) and the profile building (:func:`build_profile`) are
separate so the latter can be tested with recorded numbers, and :func:`measure` takes
injected ``stt`` and ``engine`` objects as well as the real ones.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.planner.catalog import Catalog, LlmProfile, Source, SttProfile

MEASURED_SOURCE_ID = "measured-here"
DEFAULT_AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "jfk.flac"

_PROMPT_TEXT = (
    "Good morning everyone. Let's review the quarterly numbers. Revenue grew eight percent, "
    "driven by the enterprise plan, while churn in the small-business tier rose slightly. "
    "Marketing proposes shifting budget from events to webinars. Engineering reports the "
    "migration to the new database finished on schedule, with one incident during cutover. "
)


class CalibrationError(Exception):
    pass


@dataclass(frozen=True)
class Hardware:
    cpu_model: str
    cores: int
    gpu: str | None = None

    def describe(self) -> str:
        where = f"{self.cpu_model} ({self.cores} cores)"
        return f"{where}, GPU {self.gpu}" if self.gpu else f"{where}, no GPU"


@dataclass(frozen=True)
class Measurement:
    """Raw timings. Seconds are wall-clock, after one warm-up call each."""

    stt_audio_s: float
    stt_wall_s: float
    llm_prefill_tokens: int
    llm_prefill_s: float
    llm_decode_tokens: int
    llm_decode_s: float
    stt_model: str = ""
    llm_model: str = ""
    stt_batch: int = 1  # recordings in one batched Whisper pass (1: the sequential path)
    llm_batch: int = 1  # concurrent LLM requests; the rates are their aggregate


@dataclass(frozen=True)
class MeasuredProfile:
    hardware: Hardware
    measurement: Measurement
    date: str
    stt: SttProfile
    llm: LlmProfile
    source: Source

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware": asdict(self.hardware),
            "measurement": asdict(self.measurement),
            "date": self.date,
            "stt": self.stt.model_dump(),
            "llm": self.llm.model_dump(),
            "source": self.source.model_dump(),
        }


def detect_hardware(cpuinfo: str | None = None) -> Hardware:
    """CPU model and core count from /proc/cpuinfo; GPU name from nvidia-smi if present."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            model = value.strip()
            break
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    cores = cores or os.cpu_count() or 1
    gpu = None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if names:
                gpu = f"{len(names)} x {names[0]}"
        except (OSError, subprocess.SubprocessError):
            gpu = None
    return Hardware(cpu_model=model, cores=cores, gpu=gpu)


def build_profile(
    m: Measurement,
    hardware: Hardware,
    *,
    stt_vram_gb: float = 0.0,
    llm_vram_gb: float = 0.0,
    date: str | None = None,
) -> MeasuredProfile:
    """Throughput profiles from raw timings: inverse RTF of the (batched) Whisper pass and
    aggregate tokens/s at the measured LLM concurrency, which becomes the batch size."""
    for name in ("stt_audio_s", "stt_wall_s", "llm_prefill_s", "llm_decode_s"):
        value = getattr(m, name)
        if not value > 0:
            raise CalibrationError(f"measurement {name} must be > 0, got {value!r}")
    if m.llm_prefill_tokens <= 0 or m.llm_decode_tokens <= 0:
        raise CalibrationError("the LLM measurement produced no tokens")
    date = date or dt.date.today().isoformat()
    source = Source(
        title=f"measured here on {hardware.describe()}: {m.stt_model or 'STT'} "
        f"{m.stt_audio_s:.1f} s audio in {m.stt_wall_s:.2f} s; {m.llm_model or 'LLM'} "
        f"prefill {m.llm_prefill_tokens} tok in {m.llm_prefill_s:.2f} s, decode "
        f"{m.llm_decode_tokens} tok in {m.llm_decode_s:.2f} s "
        f"(Whisper batch {m.stt_batch}, LLM batch {m.llm_batch})",
        url=None,
        as_of=date,
        note="aipp plan --calibrate",
    )
    stt = SttProfile(
        audio_s_per_gpu_s=m.stt_audio_s / m.stt_wall_s,
        vram_gb=stt_vram_gb,
        basis="measured",
        source=MEASURED_SOURCE_ID,
    )
    llm = LlmProfile(
        prefill_tokens_per_s=m.llm_prefill_tokens / m.llm_prefill_s,
        decode_tokens_per_s=m.llm_decode_tokens / m.llm_decode_s,
        batch_size=max(1, m.llm_batch),
        vram_gb=llm_vram_gb,
        basis="measured",
        source=MEASURED_SOURCE_ID,
    )
    return MeasuredProfile(
        hardware=hardware, measurement=m, date=date, stt=stt, llm=llm, source=source
    )


def apply_profile(
    catalog: Catalog, profile: MeasuredProfile, gpu: str, stt_model: str, llm_model: str
) -> Catalog:
    """A copy of ``catalog`` whose (model, gpu) profiles are the measured ones.

    Memory figures are kept from the catalog when it has them (calibration does not
    measure VRAM), so the packing check still works.
    """
    data = catalog.model_dump()
    data["sources"][MEASURED_SOURCE_ID] = profile.source.model_dump()
    stt = profile.stt.model_dump()
    llm = profile.llm.model_dump()
    stt_models = data["stt_models"].setdefault(
        stt_model, {"description": "measured", "profiles": {}}
    )
    old = stt_models["profiles"].get(gpu)
    if old is not None:
        stt["vram_gb"] = old["vram_gb"]
    stt_models["profiles"][gpu] = stt
    llm_models = data["llm_models"].setdefault(
        llm_model, {"description": "measured", "profiles": {}}
    )
    old = llm_models["profiles"].get(gpu)
    if old is not None:
        llm["vram_gb"] = old["vram_gb"]
    llm_models["profiles"][gpu] = llm
    return Catalog.model_validate(data)


# ----------------------------------------------------------------------- measuring


def _transcribe(stt: Any, audio: Path) -> float:
    """Run one transcription through whichever entry point the wrapper offers.

    Returns the audio duration in seconds.
    """
    if hasattr(stt, "transcribe_bytes"):
        out = stt.transcribe_bytes(audio.read_bytes())
        transcript = getattr(out, "transcript", out)
    elif hasattr(stt, "transcribe"):
        try:
            transcript = stt.transcribe(str(audio))
        except TypeError:
            transcript = stt.transcribe(audio.read_bytes())
        transcript = getattr(transcript, "transcript", transcript)
    else:
        raise CalibrationError("the STT object has neither transcribe_bytes nor transcribe")
    duration = float(getattr(transcript, "duration_s", 0.0))
    if duration <= 0:
        raise CalibrationError("the STT wrapper reported no audio duration")
    return duration


def _messages(nonce: str, repeats: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"[{nonce}] You summarise meeting transcripts."},
        {
            "role": "user",
            "content": f"Transcript ({nonce}):\n"
            + _PROMPT_TEXT * repeats
            + "\nSummarise the meeting in five bullet points.",
        },
    ]


def _transcribe_batch(stt: Any, audio: Path, batch: int) -> float:
    """``batch`` copies of ``audio`` in one batched pass (what a GPU Transcriber runs);
    returns the audio seconds transcribed."""
    from app.speech.stt import SttOptions

    outs = stt.transcribe_bytes_many([audio.read_bytes()] * batch, SttOptions())
    bad = [o for o in outs if isinstance(o, Exception)]
    if bad:
        raise CalibrationError(f"the batched STT pass failed: {bad[0]}")
    total = sum(float(getattr(o.transcript, "duration_s", 0.0)) for o in outs)
    if total <= 0:
        raise CalibrationError("the STT wrapper reported no audio duration")
    return total


def stt_batch_size(stt: Any, batch: int) -> int:
    """The batch the deployed path uses: ``batch`` on the batched (GPU) pipeline, else 1."""
    batched = bool(getattr(stt, "batching", False)) and hasattr(stt, "transcribe_bytes_many")
    return max(1, batch) if batched else 1


def measure_stt(
    stt: Any, audio: Path, clock: Any = time.perf_counter, repeats: int = 2, batch: int = 1
) -> tuple[float, float]:
    """(audio seconds, fastest wall seconds of ``repeats`` runs) after a warm-up call.

    With ``batch > 1`` and a wrapper on the batched pipeline, each run is one batched
    pass over ``batch`` copies, as a GPU Transcriber serves concurrent files.
    """
    n = stt_batch_size(stt, batch)

    def once() -> float:
        return _transcribe_batch(stt, audio, n) if n > 1 else _transcribe(stt, audio)

    once()  # warm-up: the first call pays lazy initialisation
    audio_s, wall = 0.0, math.inf
    for _ in range(max(1, repeats)):
        t0 = clock()
        audio_s = once()
        wall = min(wall, clock() - t0)
    if not 0 < wall < math.inf:
        raise CalibrationError("the STT measurement took no time")
    return audio_s, wall


def _concurrent(engine: Any, tag: str, n: int, prompt_repeats: int, max_tokens: int) -> Any:
    """``n`` requests at once with distinct prompts; returns their summed token counts
    (as one completion-like object). A batching engine (vLLM) serves them together."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n) as pool:
        outs = list(
            pool.map(
                lambda i: engine.generate(
                    _messages(f"{tag}-{i}", prompt_repeats), max_tokens=max_tokens, temperature=0.0
                ),
                range(n),
            )
        )

    class Sum:
        prompt_tokens = sum(int(o.prompt_tokens) for o in outs)
        completion_tokens = sum(int(o.completion_tokens) - 1 for o in outs) + 1

    return Sum()


def measure_llm(
    engine: Any,
    *,
    decode_tokens: int = 64,
    prompt_repeats: int = 6,
    repeats: int = 2,
    clock: Any = time.perf_counter,
    concurrency: int = 1,
) -> tuple[int, float, int, float]:
    """(prefill tokens, prefill s, decode tokens, decode s) at batch size 1.

    Call A generates up to ``decode_tokens`` tokens from prompt P1; call B generates one
    token from a different prompt P2 of the same length. B's time is a prefill, so
    prefill tok/s = B.prompt_tokens / t_B, and A's decode time is t_A minus A's prefill
    at that rate, over A.completion_tokens - 1 decode steps. The prompts differ from
    their first token so llama.cpp's prefix cache cannot shorten B. Each call runs
    ``repeats`` times and the fastest counts (other load only ever slows a run down).

    ``concurrency > 1`` sends that many A (and then B) calls at once, as the Summarizer
    receives them; the counts and rates are their aggregate (the profile's batch size).
    """
    engine.generate(_messages("warm-up", 1), max_tokens=4, temperature=0.0)
    t_a = t_b = math.inf
    a = b = None
    n = max(1, concurrency)
    for i in range(max(1, repeats)):
        t0 = clock()
        if n > 1:
            a_i = _concurrent(engine, f"A{i}", n, prompt_repeats, decode_tokens)
        else:
            a_i = engine.generate(
                _messages(f"A{i}", prompt_repeats), max_tokens=decode_tokens, temperature=0.0
            )
        dt = clock() - t0
        if dt < t_a:
            t_a, a = dt, a_i
        t0 = clock()
        if n > 1:
            b_i = _concurrent(engine, f"B{i}", n, prompt_repeats, 1)
        else:
            b_i = engine.generate(_messages(f"B{i}", prompt_repeats), max_tokens=1, temperature=0.0)
        dt = clock() - t0
        if dt < t_b:
            t_b, b = dt, b_i
    assert a is not None and b is not None
    if not 0 < t_b < math.inf or b.prompt_tokens <= 0:
        raise CalibrationError("the LLM prefill measurement took no time")
    prefill_tps = b.prompt_tokens / t_b
    decode_time = t_a - a.prompt_tokens / prefill_tps
    decode_n = int(a.completion_tokens) - 1
    if decode_n <= 0:
        raise CalibrationError(
            "the LLM stopped before decoding enough tokens to time; raise decode_tokens"
        )
    if decode_time <= 0:
        raise CalibrationError(
            "LLM timings are inconsistent (a one-token call took longer than a "
            f"{decode_n + 1}-token one); the machine is probably busy, try again"
        )
    return int(b.prompt_tokens), t_b, decode_n, decode_time


def busy_warning(hardware: Hardware, load_1m: float | None = None) -> str | None:
    """A warning when other work competed for the cores while measuring."""
    if load_1m is None:
        try:
            load_1m = os.getloadavg()[0]
        except OSError:
            return None
    if load_1m > hardware.cores:
        return (
            f"load average {load_1m:.1f} on {hardware.cores} cores while measuring: other "
            "work competed for the CPU, so the measured throughput is pessimistic"
        )
    return None


def measure(
    settings: Any | None = None,
    *,
    audio_path: str | Path | None = None,
    stt: Any | None = None,
    engine: Any | None = None,
    decode_tokens: int = 64,
    prompt_repeats: int = 6,
    repeats: int = 2,
    clock: Any = time.perf_counter,
    batch: int | None = None,
) -> Measurement:
    """Time the project's STT and LLM wrappers on this machine.

    ``batch`` (default: the settings' ``stt_batch_size``): on the batched (GPU) path,
    recordings per Whisper pass and concurrent LLM requests (vLLM batches them), so the
    profile describes what the deployment runs rather than batch 1. On CPU both paths
    run one at a time (llama.cpp serialises calls), and so does the measurement.

    ``stt`` and ``engine`` default to ``app.speech.stt.SpeechToText.from_settings(settings)``
    and ``app.llm.build_engine(settings)``, imported here so the planner itself does
    not need the model stack; pass your own objects to measure something else.
    """
    audio = Path(audio_path) if audio_path else DEFAULT_AUDIO
    if not audio.is_file():
        raise CalibrationError(f"calibration audio not found: {audio}")
    if settings is None and (stt is None or engine is None):
        from app.core.settings import get_settings

        settings = get_settings()
    if stt is None:
        from app.speech.stt import SpeechToText

        stt = SpeechToText.from_settings(settings)
    if batch is None:
        batch = int(getattr(settings, "stt_batch_size", 1) or 1)
    stt_batch = stt_batch_size(stt, batch)
    llm_batch = max(1, batch) if stt_batch > 1 else 1
    audio_s, stt_wall = measure_stt(stt, audio, clock, repeats, batch=batch)
    if engine is None:
        from app.llm import build_engine

        engine = build_engine(settings)
    p_tok, p_s, d_tok, d_s = measure_llm(
        engine,
        decode_tokens=decode_tokens,
        prompt_repeats=prompt_repeats,
        repeats=repeats,
        clock=clock,
        concurrency=llm_batch,
    )
    return Measurement(
        stt_audio_s=audio_s,
        stt_wall_s=stt_wall,
        llm_prefill_tokens=p_tok,
        llm_prefill_s=p_s,
        llm_decode_tokens=d_tok,
        llm_decode_s=d_s,
        stt_model=str(getattr(stt, "model_name", "") or getattr(settings, "stt_model", "")),
        llm_model=str(getattr(engine, "model_name", "") or getattr(settings, "llm_model", "")),
        stt_batch=stt_batch,
        llm_batch=llm_batch,
    )


def calibrate(
    catalog: Catalog,
    gpu: str,
    stt_model: str,
    llm_model: str,
    *,
    measurement: Measurement | None = None,
    hardware: Hardware | None = None,
    **measure_kwargs: Any,
) -> tuple[Catalog, MeasuredProfile]:
    """Measure (or take ``measurement``), build the profile and apply it to ``catalog``."""
    m = measurement if measurement is not None else measure(**measure_kwargs)
    hw = hardware if hardware is not None else detect_hardware()
    profile = build_profile(m, hw)
    return apply_profile(catalog, profile, gpu, stt_model, llm_model), profile
