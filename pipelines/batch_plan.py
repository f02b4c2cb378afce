"""The batch job's options, and the plan that sizes its actor pools from them.

Kept apart from the run (:mod:`pipelines.batch_summarize`) because it is pure: options
and the cluster's free resources in, pool sizes out, no Ray, so it is tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.settings import Settings
from pipelines.sources import DEFAULT_EXTENSIONS

IO_TASK_CPUS = 0.25  # read + decode: short, mostly I/O and FFmpeg
LLAMA_ACTOR_MEMORY = 1.5 * 2**30  # 0.5B Q4 GGUF + context; caps the pool by node memory


class BatchError(RuntimeError):
    """A problem with the job's arguments or environment (not with one file)."""


@dataclass
class BatchOptions:
    input: str
    output: str
    format: str = "parquet"
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    force: bool = False
    limit: int | None = None
    address: str | None = None
    num_cpus: int | None = None  # logical CPUs of a local Ray this job starts
    device: str = "auto"  # auto | cpu | gpu
    summarizer: str = "auto"  # auto | actor | vllm
    stt_actors: int | None = None
    llm_actors: int | None = None
    stt_threads: int | None = None
    llm_threads: int | None = None
    gpu_fraction: float = 0.5  # of each GPU for a Whisper actor; the LLM gets the rest
    gpus: int | None = None  # GPUs to plan for with --device gpu (autoscaled clusters)
    io_tasks: int | None = None
    llm_batch_size: int = 32  # rows per vLLM processor batch (GPU)
    language: str | None = None
    instruction: str | None = None
    diarize: bool = False  # who spoke when: a Diarize stage before Transcribe
    min_speakers: int | None = None
    max_speakers: int | None = None
    rows_per_file: int = 64
    flush_interval_s: float = 30.0
    record_tasks: bool | None = None  # None: on when AIPP_DATABASE_URL is set
    tenant: str = "batch"
    quiet: bool = False
    settings: Settings | None = field(default=None, repr=False)


@dataclass
class Plan:
    device: str
    summarizer: str
    stt_actors: int
    stt_threads: int
    stt_num_cpus: float
    stt_num_gpus: float
    llm_actors: int
    llm_threads: int
    llm_num_cpus: float
    llm_num_gpus: float
    io_tasks: int
    shortfall: str | None = None  # what the pools need beyond the free resources

    def describe(self) -> str:
        gpu = lambda g: f", {g:g} GPU" if g else ""  # noqa: E731
        return (
            f"device={self.device} | Whisper: {self.stt_actors} actor(s) x "
            f"{self.stt_threads or 'auto'} thread(s){gpu(self.stt_num_gpus)} | summary "
            f"({self.summarizer}): {self.llm_actors} x {self.llm_threads or 'auto'} thread(s)"
            f"{gpu(self.llm_num_gpus)} | read/decode: {self.io_tasks} task(s)"
        )


def make_plan(
    opts: BatchOptions, settings: Settings, resources: dict, pending: int, local_cores: int | None
) -> Plan:
    """Size the actor pools from the cluster's free resources (each flag overrides).

    CPU: the LLM costs several times Whisper per file, so one Whisper actor per
    8 CPUs and one single-threaded llama.cpp actor per remaining CPU (engines side
    by side keep every core busy while tokens are generated one at a time). The
    read/decode tasks always keep their share, or they could never be scheduled
    once the actors hold every CPU. GPU: each GPU holds one
    Whisper actor (``gpu_fraction``) and one vLLM engine (the rest).

    ``--device gpu`` plans for ``opts.gpus`` GPUs (default: those free, at least one)
    even when none is free yet: on an autoscaled cluster the GPU groups start at zero,
    and only actors that ask for GPUs make the autoscaler add GPU nodes. The plan's
    ``shortfall`` then says what it waits for. A local Ray we started gets no GPUs
    by waiting, so there it is an error.
    """
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    if opts.gpus is not None and opts.device != "gpu":
        raise BatchError("--gpus needs --device gpu")
    if opts.device == "gpu" and gpus < 1 and (local_cores or not opts.gpus):
        raise BatchError(
            "--device gpu, but the Ray cluster has no free GPU"
            + ("" if local_cores else "; pass --gpus N to wait for N from the autoscaler")
        )
    if opts.device == "gpu" and opts.gpus:
        gpus_planned = float(opts.gpus)
    else:
        gpus_planned = gpus
    use_gpu = opts.device == "gpu" or (opts.device == "auto" and gpus >= 1)
    summarizer = opts.summarizer
    if summarizer == "auto":
        summarizer = "vllm" if use_gpu and settings.llm_engine == "vllm" else "actor"
    if summarizer == "vllm" and not (use_gpu and settings.llm_engine == "vllm"):
        raise BatchError("--summarizer vllm needs GPUs and AIPP_LLM_ENGINE=vllm")
    if not 0 < opts.gpu_fraction < 1:
        raise BatchError("--gpu-fraction must be between 0 and 1")
    io_tasks = opts.io_tasks or max(2, min(8, int(cpus // 4)))
    free = max(1.0, cpus - io_tasks * IO_TASK_CPUS)

    stt_threads = opts.stt_threads or settings.stt_cpu_threads or (0 if use_gpu else 1)
    llm_threads = opts.llm_threads or settings.llm_threads or 1
    if use_gpu:
        whole = max(1, int(gpus_planned))
        stt_gpu = opts.gpu_fraction
        llm_on_gpu = settings.llm_engine == "vllm"
        llm_gpu = round(1.0 - stt_gpu, 3) if llm_on_gpu else 0.0
        stt_actors = opts.stt_actors or (whole if llm_on_gpu else max(1, int(whole / stt_gpu)))
        stt_cpus = 1.0
        free -= stt_actors
        if llm_on_gpu:
            llm_actors = opts.llm_actors or whole
        else:
            llm_actors = opts.llm_actors or max(1, int(free // llm_threads))
    else:
        stt_gpu = llm_gpu = 0.0
        stt_cpus = float(stt_threads)
        stt_actors = opts.stt_actors or max(1, int(cpus // 8))
        free -= stt_actors * stt_cpus
        llm_actors = opts.llm_actors or max(1, int(free // llm_threads))
        if local_cores and not opts.llm_actors:
            llm_actors = min(llm_actors, max(1, local_cores // llm_threads))
    if settings.llm_engine == "llama_cpp" and not opts.llm_actors:
        memory = float(resources.get("memory", 0.0))
        if memory:
            llm_actors = min(llm_actors, max(1, int(memory // LLAMA_ACTOR_MEMORY)))
    n = max(1, pending)
    plan = Plan(
        device="gpu" if use_gpu else "cpu",
        summarizer=summarizer,
        stt_actors=min(stt_actors, n),
        stt_threads=stt_threads,
        stt_num_cpus=stt_cpus,
        stt_num_gpus=stt_gpu,
        llm_actors=min(llm_actors, n),
        llm_threads=0 if llm_gpu else llm_threads,
        llm_num_cpus=1.0 if llm_gpu else float(llm_threads),
        llm_num_gpus=llm_gpu,
        io_tasks=io_tasks,
    )
    need_cpu = (
        plan.stt_actors * plan.stt_num_cpus
        + plan.llm_actors * plan.llm_num_cpus
        + plan.io_tasks * IO_TASK_CPUS
    )
    need_gpu = plan.stt_actors * plan.stt_num_gpus + plan.llm_actors * plan.llm_num_gpus
    io_cpus = plan.io_tasks * IO_TASK_CPUS
    if local_cores and need_cpu > cpus and cpus > io_cpus:
        # Our own Ray, so nothing will ever free up: shrink the actors' logical CPUs
        # (their threads stay as set) rather than wait forever.
        factor = (cpus - io_cpus) / (need_cpu - io_cpus)
        plan.stt_num_cpus = int(plan.stt_num_cpus * factor * 100) / 100
        plan.llm_num_cpus = int(plan.llm_num_cpus * factor * 100) / 100
        need_cpu = (
            plan.stt_actors * plan.stt_num_cpus + plan.llm_actors * plan.llm_num_cpus + io_cpus
        )
    if need_cpu > cpus + 1e-6 or need_gpu > gpus + 1e-6:
        plan.shortfall = (
            f"the actor pools and readers need {need_cpu:g} CPU / {need_gpu:g} GPU, "
            f"the cluster has {cpus:g} CPU / {gpus:g} GPU free"
        )
    return plan
