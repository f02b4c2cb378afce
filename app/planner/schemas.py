"""The planner's request and result models (pydantic), shared by the CLI, API and page.

Every numeric input is finite and bounded on both sides to a physically meaningful
range (an audio file of at least 0.6 s, a busiest hour that holds at most a day's
work, ...): together the bounds keep any schema-valid request's GPU counts, search work
and arithmetic finite (see docs/planner.md, "Bounds").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.planner.catalog import Source

MAX_TASKS_PER_MONTH = 1_000_000_000
MAX_GPUS_PER_POOL = 1_000_000
PackingMode = Literal["auto", "dedicated", "packed"]
Option = Literal["dedicated", "packed"]
SizingMethod = Literal["queueing", "throughput"]
Commitment = Literal["none", "savings-plan-1y", "savings-plan-3y"]
SupportChoice = Literal["none", "developer", "business"]


class PlannerInputError(Exception):
    """An input the catalog cannot serve (unknown GPU or model, packing that does not fit)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class PlanInput(BaseModel):
    """A workload and the choices to price it with. Every field has a documented default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tasks_per_month: int = Field(
        ..., gt=0, le=MAX_TASKS_PER_MONTH, description="Audio files processed per month."
    )
    avg_minutes: float = Field(
        ...,
        ge=0.01,
        le=1440,
        description="Average audio length per task, in minutes (0.6 s to a day).",
    )
    duration_cv: float = Field(
        0.5,
        ge=0,
        le=4,
        description="Coefficient of variation of audio length (0 = all equal, 1 = exponential).",
    )
    active_hours_per_day: float = Field(
        10, ge=1, le=24, description="Hours a day the tasks arrive in."
    )
    active_days_per_month: float = Field(
        22, ge=1, le=31, description="Days a month the tasks arrive on (22 = working days)."
    )
    peak_factor: float = Field(
        2.0,
        ge=1,
        le=24,
        description="Peak hour load / average active-hour load; at most active_hours_per_day "
        "(the busiest hour cannot hold more than the whole day's tasks).",
    )
    sizing: SizingMethod = Field(
        "queueing",
        description="`queueing` sizes each pool to the p95 target (M/G/c, Erlang C with "
        "Allen–Cunneen); `throughput` uses average throughput / target_utilization.",
    )
    p95_minutes: float = Field(
        15,
        ge=0.5,
        le=10080,
        description="Target: p95 time from upload to result at the peak hour, in minutes.",
    )
    max_utilization: float = Field(
        0.9,
        ge=0.1,
        le=1,
        description="Queueing sizing only: never plan a pool above this utilisation "
        "(headroom for throughput estimates and node failures).",
    )
    target_utilization: float = Field(
        0.7,
        ge=0.05,
        le=1,
        description="Throughput sizing only: share of a GPU's throughput to plan on.",
    )
    words_per_minute: float = Field(150, ge=10, le=600, description="Speech rate.")
    tokens_per_word: float = Field(1.33, ge=0.2, le=5, description="LLM tokens per word.")
    prompt_overhead_tokens: int = Field(
        600, ge=0, le=100_000, description="System prompt, schema and instructions per call."
    )
    summary_tokens_in: int | None = Field(
        None,
        gt=0,
        le=2_000_000,
        description="Override: input tokens per task (default derived from avg_minutes).",
    )
    summary_tokens_out: int = Field(
        500, gt=0, le=100_000, description="Output tokens per task (the structured summary)."
    )
    gpu: str = Field("L4", min_length=1, max_length=64, description="GPU type in the catalog.")
    stt_model: str = Field("whisper-large-v3", min_length=1, max_length=128)
    llm_model: str = Field("llama-3.1-8b-instruct", min_length=1, max_length=128)
    bedrock_model: str = Field("claude-haiku-4.5", min_length=1, max_length=128)
    bedrock_batch: bool = Field(
        False, description="Price the chosen managed baseline with Bedrock batch inference."
    )
    managed_stt: str = Field(
        "aws-transcribe",
        min_length=1,
        max_length=64,
        description="Managed speech-to-text API of the chosen baseline.",
    )
    diarize: bool = Field(False, description="Add a speaker-diarization pool (and add-ons).")
    diarizer_device: Literal["cpu", "gpu"] = Field(
        "cpu", description="Where the diarizer runs: CPU nodes or GPUs of the chosen type."
    )
    diarizer_audio_s_per_s: float | None = Field(
        None,
        ge=0.1,
        le=10_000,
        description="Override: audio seconds one diarizer node/GPU processes per second "
        "(1 / RTF), e.g. as measured by bench/diarization.py.",
    )
    packing: PackingMode = Field(
        "auto",
        description="`auto` packs Whisper and the LLM on one GPU when that fits and "
        "is cheaper; `dedicated` or `packed` force one layout.",
    )
    packing_efficiency: float = Field(
        0.85, ge=0.1, le=1, description="Throughput kept when both models share a GPU."
    )
    spot_share: float = Field(
        0.0, ge=0, le=1, description="Share of GPU-hours run on spot instances."
    )
    spot_interruption_overhead: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Extra spot GPU-hours: work re-run after interruptions, plus restarts.",
    )
    scale_up_delay_minutes: float = Field(
        3,
        ge=0,
        le=120,
        description="Minutes a new GPU replica needs before it takes work (node start, "
        "image, model load). Added to the p95 when capacity is not always there: with "
        "spot (a reclaimed node is replaced) or active-hours-only GPUs (cold starts).",
    )
    commitment: Commitment = Field(
        "none", description="Savings Plan rate for the always-on on-demand GPU floor."
    )
    support_plan: SupportChoice = Field(
        "business",
        description="AWS support plan, a share of each side's AWS usage (both sides pay it).",
    )
    bedrock_in_region: bool = Field(
        False, description="Bedrock through in-region endpoints (a premium on some models)."
    )
    ha: bool = Field(False, description="High availability: one spare GPU per pool (N+1).")
    ops_hours_per_month: float = Field(
        8, ge=0, le=744, description="Engineer hours a month to run the self-hosted stack."
    )
    ops_usd_per_hour: float = Field(
        100, ge=0, le=1000, description="Loaded cost of one engineer hour (an estimate)."
    )
    always_on: bool = Field(
        True, description="GPUs run all month; false runs them only in the active hours."
    )
    include_fixed_costs: bool = Field(True, description="Add control plane, head node, DB...")
    curve_points: int = Field(80, ge=10, le=200, description="Points in the cost curve.")

    @field_validator("peak_factor")
    @classmethod
    def _peak_within_a_day(cls, value: float, info: ValidationInfo) -> float:
        hours = info.data.get("active_hours_per_day")
        if hours is not None and value > hours:
            raise ValueError(
                f"at most active_hours_per_day ({hours:g}): the busiest hour cannot hold "
                "more than the whole day's tasks"
            )
        return value


# --------------------------------------------------------------------------- results


class LineItem(BaseModel):
    name: str
    quantity: float
    unit: str
    unit_usd: float
    monthly_usd: float
    source: str | None = None


class GpuInfo(BaseModel):
    name: str
    instance_type: str
    gpus_per_instance: int
    vram_gb: float
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float
    source: str
    spot_source: str


class SttInfo(BaseModel):
    model: str
    audio_s_per_gpu_s: float
    vram_gb: float
    basis: str
    source: str


class LlmInfo(BaseModel):
    model: str
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    batch_size: int
    vram_gb: float
    basis: str
    source: str


class Workload(BaseModel):
    audio_minutes_per_month: float
    billed_minutes_per_task: float
    summary_tokens_in_per_task: int
    summary_tokens_out_per_task: int
    tokens_in_per_month: float
    tokens_out_per_month: float
    active_hours_per_month: float
    peak_tasks_per_hour: float
    peak_audio_seconds_per_second: float
    llm_gpu_seconds_per_task: float


class PoolSizing(BaseModel):
    """One pool's size and its predicted queue at the peak hour."""

    pool: Literal["stt", "llm", "diarizer", "packed"]
    device: str
    gpus: int = Field(description="GPUs (or CPU nodes for a CPU diarizer), spares included.")
    spares: int = 0
    servers_per_gpu: int
    service_s: float = Field(description="Mean time one server spends on one task.")
    offered_load: float = Field(description="Erlangs: arrival rate x service time.")
    utilization: float
    prob_wait: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    throughput_gpus_exact: float = Field(description="Average-throughput GPUs at utilisation 1.")
    service_p95_s: float = Field(0.0, description="p95 time one task spends in service.")
    basis: str
    usd_per_audio_hour: float | None = None


class OptionCost(BaseModel):
    option: Option
    available: bool
    reason: str = ""
    stt_gpus: int = 0
    llm_gpus: int = 0
    total_gpus: int = 0
    ondemand_gpus: int = 0
    spot_gpus: int = 0
    ondemand_instances: int = 0
    spot_instances: int = 0
    vram_needed_gb: float = 0.0
    monthly_usd: float | None = None


class Sizing(BaseModel):
    method: SizingMethod
    p95_target_s: float | None
    predicted_p95_s: float | None = Field(
        description="Predicted p95 upload-to-result time at the peak hour (sum of the "
        "stages' p95 waits and p95 service times)."
    )
    meets_target: bool | None
    delay_allowance_s: float = Field(
        0.0, description="Scale-up / spot replacement delay included in the predicted p95."
    )
    combined_utilization: float | None = Field(
        None, description="Packed layout: STT + LLM load on the shared GPUs."
    )
    pools: list[PoolSizing]
    stt_gpus_exact: float
    llm_gpus_exact: float
    packed_gpus_exact: float | None
    dedicated: OptionCost
    packed: OptionCost
    chosen: Option
    cheaper_option: Option
    note: str
    stt_gpus: int
    llm_gpus: int
    diarizer_units: int = 0
    total_gpus: int


class CostBreakdown(BaseModel):
    line_items: list[LineItem]
    monthly_usd: float
    per_task_usd: float


class VolumeRange(BaseModel):
    """Monthly volumes ``from_tasks`` to ``to_tasks`` (inclusive; None: up to the end of
    the search, 10^9 tasks or the planner's pool limit)."""

    from_tasks: int
    to_tasks: int | None


class Crossover(BaseModel):
    status: Literal["found", "always_cheaper", "none", "windows", "search_limit"] = Field(
        description="found: self-hosting stays cheaper from tasks_per_month on; windows: "
        "cheaper only in ranges that close again; none: never cheaper; search_limit: "
        "like windows or none, with undecided ranges."
    )
    tasks_per_month: int | None = Field(
        description="From this volume on self-hosting stays cheaper (to the end of the search)."
    )
    first_cheaper: int | None = Field(None, description="The first volume where it is cheaper.")
    self_hosted_usd: float | None = None
    managed_usd: float | None = None
    ranges: list[VolumeRange] = Field(
        [], description="Every volume range where self-hosting is cheaper."
    )
    undecided: list[VolumeRange] = Field(
        [],
        description="Ranges where the two costs alternate within one GPU step and the "
        "bounded search did not resolve each window (search_limit); empty almost always.",
    )
    search_end: int | None = Field(None, description="The largest volume searched.")
    message: str


class CheapestSegment(BaseModel):
    """Volumes where one like-for-like baseline is the cheapest managed option."""

    from_tasks: int
    to_tasks: int | None
    baseline: str


class ManagedBaseline(BaseModel):
    """One managed pipeline: a speech-to-text API plus Bedrock (on-demand or batch)."""

    id: str
    name: str
    stt_api: str
    bedrock_mode: Literal["on-demand", "batch"]
    monthly_usd: float
    per_task_usd: float
    cheaper: Literal["self_hosted", "managed"]
    crossover: Crossover
    comparable: bool = Field(
        True, description="Meets the plan's p95 target (batch APIs: only if you can wait)."
    )
    turnaround_h: float | None = Field(
        None, description="Longest a task may take by the provider's terms (batch: 24 h)."
    )
    band_low: int | None = Field(None, description="Stays-cheaper-from, favourable corner.")
    band_high: int | None = Field(None, description="Stays-cheaper-from, unfavourable corner.")
    notes: list[str] = []


class Curve(BaseModel):
    tasks_per_month: list[int]
    self_hosted_usd: list[float]
    managed_usd: list[float]
    cheapest_managed_usd: list[float] = Field(
        [], description="The cheapest like-for-like baseline at each volume."
    )
    cheapest_managed_id: list[str] = Field([], description="Which baseline that is.")


class Band(BaseModel):
    """The crossover and self-hosted cost when throughput, peak factor and prices vary."""

    assumptions: list[str]
    crossover_low: int | None = Field(
        description="Chosen baseline: stays-cheaper-from in the favourable corner."
    )
    crossover_high: int | None = Field(
        description="Chosen baseline, unfavourable corner (None: never stays cheaper)."
    )
    cheapest_low: int | None = Field(
        None, description="Cheapest like-for-like option, favourable corner."
    )
    cheapest_high: int | None = Field(
        None, description="Cheapest like-for-like option, unfavourable corner (None: never)."
    )
    self_hosted_low_usd: list[float | None] = Field(
        description="Per curve volume; null where a corner exceeds the planner's pool limit."
    )
    self_hosted_high_usd: list[float | None]
    monthly_usd_low: float | None
    monthly_usd_high: float | None


class DeploymentReplicas(BaseModel):
    min_replicas: int
    max_replicas: int


class ReplicaAdvice(BaseModel):
    deployments: dict[str, DeploymentReplicas]
    worker_groups: dict[str, DeploymentReplicas]
    gpu_type: str


class PlanResult(BaseModel):
    preset: str | None = None
    inputs: PlanInput
    gpu: GpuInfo
    stt: SttInfo
    llm: LlmInfo
    bedrock_model: str
    workload: Workload
    sizing: Sizing
    self_hosted: CostBreakdown
    managed: CostBreakdown
    savings_monthly_usd: float = Field(
        description="Chosen managed baseline minus self-hosted; > 0 favours self-hosting."
    )
    savings_pct: float
    cheaper: Literal["self_hosted", "managed"]
    crossover: Crossover = Field(description="Against the chosen baseline.")
    crossover_cheapest: Crossover = Field(
        description="Against the cheapest like-for-like option at each volume: the headline."
    )
    baselines: list[ManagedBaseline]
    cheapest_managed: str = Field(
        description="id of the cheapest like-for-like baseline at this volume."
    )
    cheapest_if_you_can_wait: str | None = Field(
        None, description="id of the cheapest baseline that is not like-for-like (batch)."
    )
    cheapest_by_volume: list[CheapestSegment] = []
    verdict: str = Field(description="One plain sentence: which side is cheaper, against what.")
    band: Band
    curve: Curve
    replica_advice: ReplicaAdvice
    catalog_as_of: str
    stale_sources: dict[str, str] = Field(
        {}, description="Sources this plan used that are more than six months old -> date."
    )
    warnings: list[str]
    sources: dict[str, Source]
    notes: list[str]
    work_units: int = Field(description="Erlang recurrence steps this plan used (bounded).")
