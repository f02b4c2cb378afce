"""Workload in, GPU counts and monthly costs out. Pure functions over a :class:`Catalog`.

Every formula here is written out in ``docs/planner.md``; the names match.

* Demand at peak:
  ``peak_tasks_per_s = tasks / (active_days * active_hours * 3600) * peak_factor``.
* STT GPUs: ``peak_tasks_per_s * audio_s_per_task / (audio_s_per_gpu_s * utilization)``.
* LLM GPUs:
  ``peak_tasks_per_s * (tokens_in / prefill_tps + tokens_out / decode_tps) / utilization``.
* Each pool needs ``max(1, ceil(exact))`` GPUs once there is any load.
* Packed (Whisper and the LLM at num_gpus 0.5 + 0.5 on one GPU, when both fit in its
  memory): ``max(1, ceil((stt_exact + llm_exact) / packing_efficiency))``.
* Self-hosted: GPU instances x hours x price (spot share at the spot price plus the
  interruption overhead) + fixed platform costs.
* Managed: Amazon Transcribe (tiered per minute, per-second billing, 15 s minimum per
  request) + Bedrock input and output tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.planner.catalog import Catalog, LlmProfile, Source, SttProfile

MAX_TASKS_PER_MONTH = 1_000_000_000
PackingMode = Literal["auto", "dedicated", "packed"]
Option = Literal["dedicated", "packed"]


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
        ..., gt=0, le=1440, description="Average audio length per task, in minutes."
    )
    active_hours_per_day: float = Field(
        10, gt=0, le=24, description="Hours a day the tasks arrive in."
    )
    active_days_per_month: float = Field(
        22, gt=0, le=31, description="Days a month the tasks arrive on (22 = working days)."
    )
    peak_factor: float = Field(
        2.0, ge=1, le=100, description="Peak hour load / average active-hour load."
    )
    target_utilization: float = Field(
        0.7, gt=0, le=1, description="Share of a GPU's throughput to plan on (headroom)."
    )
    words_per_minute: float = Field(150, gt=0, le=1000, description="Speech rate.")
    tokens_per_word: float = Field(1.33, gt=0, le=10, description="LLM tokens per word.")
    prompt_overhead_tokens: int = Field(
        600, ge=0, le=1_000_000, description="System prompt, schema and instructions per call."
    )
    summary_tokens_in: int | None = Field(
        None,
        gt=0,
        le=10_000_000,
        description="Override: input tokens per task (default derived from avg_minutes).",
    )
    summary_tokens_out: int = Field(
        500, gt=0, le=1_000_000, description="Output tokens per task (the structured summary)."
    )
    gpu: str = Field("L4", min_length=1, max_length=64, description="GPU type in the catalog.")
    stt_model: str = Field("whisper-large-v3", min_length=1, max_length=128)
    llm_model: str = Field("llama-3.1-8b-instruct", min_length=1, max_length=128)
    bedrock_model: str = Field("claude-3-haiku", min_length=1, max_length=128)
    packing: PackingMode = Field(
        "auto",
        description="`auto` packs Whisper and the LLM on one GPU when that fits and "
        "is cheaper; `dedicated` or `packed` force one layout.",
    )
    packing_efficiency: float = Field(
        0.85, gt=0, le=1, description="Throughput kept when both models share a GPU."
    )
    spot_share: float = Field(0.0, ge=0, le=1, description="Share of GPUs run on spot.")
    spot_interruption_overhead: float = Field(
        0.05, ge=0, le=1, description="Extra spot GPU-hours lost to interruptions and restarts."
    )
    always_on: bool = Field(
        True, description="GPUs run all month; false runs them only in the active hours."
    )
    include_fixed_costs: bool = Field(True, description="Add control plane, head node, DB...")
    curve_points: int = Field(80, ge=10, le=1000, description="Points in the cost curve.")


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
    total_gpus: int


class CostBreakdown(BaseModel):
    line_items: list[LineItem]
    monthly_usd: float
    per_task_usd: float


class Crossover(BaseModel):
    status: Literal["found", "always_cheaper", "none", "search_limit"]
    tasks_per_month: int | None
    self_hosted_usd: float | None = None
    managed_usd: float | None = None
    message: str


class Curve(BaseModel):
    tasks_per_month: list[int]
    self_hosted_usd: list[float]
    managed_usd: list[float]


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
        description="Managed minus self-hosted; > 0 favours self-hosting."
    )
    savings_pct: float
    cheaper: Literal["self_hosted", "managed"]
    crossover: Crossover
    curve: Curve
    replica_advice: ReplicaAdvice
    sources: dict[str, Source]
    notes: list[str]


# ----------------------------------------------------------------------- cost model


def gpus_needed(k: float, volume: float) -> int:
    """``max(1, ceil(k * volume))`` once there is load; ``k`` is GPUs per monthly task."""
    if volume <= 0:
        return 0
    x = k * volume
    return max(1, math.ceil(x - 1e-9 * max(1.0, x)))


def transcribe_usd(minutes: float, tiers: list[tuple[float | None, float]]) -> float:
    """Tiered price of ``minutes`` billed in one month; tiers are (cumulative bound, rate)."""
    if minutes <= 0:
        return 0.0
    total = 0.0
    lower = 0.0
    for upper, rate in tiers:
        top = minutes if upper is None else min(minutes, upper)
        if top > lower:
            total += (top - lower) * rate
        if upper is None or minutes <= upper:
            break
        lower = upper
    return total


def transcribe_tier_items(
    minutes: float, tiers: list[tuple[float | None, float]], source: str | None = None
) -> list[LineItem]:
    items: list[LineItem] = []
    lower = 0.0
    for i, (upper, rate) in enumerate(tiers):
        top = minutes if upper is None else min(minutes, upper)
        if top > lower:
            span = (
                f"{lower:,.0f}-{upper:,.0f} min" if upper is not None else f"above {lower:,.0f} min"
            )
            items.append(
                LineItem(
                    name=f"Amazon Transcribe tier {i + 1} ({span})",
                    quantity=round(top - lower, 4),
                    unit="minute",
                    unit_usd=rate,
                    monthly_usd=(top - lower) * rate,
                    source=source,
                )
            )
        if upper is None or minutes <= upper:
            break
        lower = upper
    return items


def billed_seconds_per_request(seconds: float, minimum_s: float, increment_s: float) -> float:
    """Per-second billing rounded up to the increment, with the per-request minimum."""
    steps = math.ceil(seconds / increment_s - 1e-9)
    return max(minimum_s, steps * increment_s)


@dataclass(frozen=True)
class CostModel:
    """Both monthly costs as functions of task volume, everything else held fixed."""

    k_stt: float
    k_llm: float
    k_packed: float | None
    options: tuple[Option, ...]
    gpus_per_instance: int
    ondemand_usd_per_hour: float
    spot_usd_per_hour: float
    gpu_hours: float
    spot_share: float
    spot_overhead: float
    fixed_monthly_usd: float
    billed_minutes_per_task: float
    tiers: tuple[tuple[float | None, float], ...]
    bedrock_usd_per_task: float

    # --- self-hosted
    def pool_gpus(self, option: Option, volume: float) -> tuple[int, int]:
        """(STT GPUs, LLM GPUs) for dedicated; (packed GPUs, 0) for packed."""
        if option == "packed":
            assert self.k_packed is not None
            return gpus_needed(self.k_packed, volume), 0
        return gpus_needed(self.k_stt, volume), gpus_needed(self.k_llm, volume)

    def split(self, total_gpus: int) -> tuple[int, int, int, int]:
        """(on-demand GPUs, spot GPUs, on-demand instances, spot instances)."""
        spot = math.floor(total_gpus * self.spot_share + 1e-9)
        ondemand = total_gpus - spot
        g = self.gpus_per_instance
        return ondemand, spot, math.ceil(ondemand / g), math.ceil(spot / g)

    def gpu_usd(self, total_gpus: int) -> tuple[float, float]:
        _, _, od_inst, sp_inst = self.split(total_gpus)
        od = od_inst * self.ondemand_usd_per_hour * self.gpu_hours
        sp = sp_inst * self.spot_usd_per_hour * self.gpu_hours * (1 + self.spot_overhead)
        return od, sp

    def option_usd(self, option: Option, volume: float) -> float:
        a, b = self.pool_gpus(option, volume)
        od, sp = self.gpu_usd(a + b)
        return od + sp + self.fixed_monthly_usd

    def best_option(self, volume: float) -> Option:
        """The cheapest layout; on a cost tie the one with fewer GPUs, then dedicated.

        Cost only grows with the GPU count, so this choice's GPU count is the minimum
        over the layouts, which keeps it non-decreasing in volume.
        """
        return min(
            self.options,
            key=lambda o: (
                self.option_usd(o, volume),
                sum(self.pool_gpus(o, volume)),
                o != "dedicated",
            ),
        )

    def self_hosted(self, volume: float) -> float:
        return min(self.option_usd(o, volume) for o in self.options)

    def lower_bound(self, option: Option, volume: float) -> float:
        """A continuous relaxation below :meth:`option_usd` (no ceil, cheapest GPU-hour)."""
        per_gpu = (
            min(self.ondemand_usd_per_hour, self.spot_usd_per_hour * (1 + self.spot_overhead))
            * self.gpu_hours
            / self.gpus_per_instance
        )
        if option == "packed":
            assert self.k_packed is not None
            gpus = max(1.0, self.k_packed * volume)
        else:
            gpus = max(1.0, self.k_stt * volume) + max(1.0, self.k_llm * volume)
        return self.fixed_monthly_usd + per_gpu * gpus

    def pool_ks(self) -> list[float]:
        ks = []
        if "dedicated" in self.options:
            ks += [self.k_stt, self.k_llm]
        if "packed" in self.options and self.k_packed is not None:
            ks.append(self.k_packed)
        return ks

    def next_break(self, volume: int) -> int:
        """Smallest integer volume above ``volume`` at which some pool's GPU count grows."""
        best: int | None = None
        for k in self.pool_ks():
            if k <= 0:
                continue
            n = gpus_needed(k, volume)
            v = max(volume + 1, math.floor(n / k) + 1)
            while gpus_needed(k, v) <= n:  # float guard: step until the count grows
                v += 1
            while v - 1 > volume and gpus_needed(k, v - 1) > n:
                v -= 1
            best = v if best is None else min(best, v)
        return best if best is not None else MAX_TASKS_PER_MONTH + 1

    # --- managed
    def transcribe_minutes(self, volume: float) -> float:
        return volume * self.billed_minutes_per_task

    def managed(self, volume: float) -> float:
        return (
            transcribe_usd(self.transcribe_minutes(volume), list(self.tiers))
            + volume * self.bedrock_usd_per_task
        )


# ------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Resolved:
    gpu: GpuInfo
    stt: SttProfile
    llm: LlmProfile


def _resolve(inp: PlanInput, catalog: Catalog) -> _Resolved:
    if inp.gpu not in catalog.gpus:
        raise PlannerInputError(
            "gpu", f"unknown GPU type '{inp.gpu}'; known: {', '.join(catalog.gpus)}"
        )
    if inp.stt_model not in catalog.stt_models:
        raise PlannerInputError(
            "stt_model",
            f"unknown STT model '{inp.stt_model}'; known: {', '.join(catalog.stt_models)}",
        )
    if inp.llm_model not in catalog.llm_models:
        raise PlannerInputError(
            "llm_model",
            f"unknown LLM model '{inp.llm_model}'; known: {', '.join(catalog.llm_models)}",
        )
    if inp.bedrock_model not in catalog.managed.bedrock:
        raise PlannerInputError(
            "bedrock_model",
            f"unknown Bedrock model '{inp.bedrock_model}'; known: "
            f"{', '.join(catalog.managed.bedrock)}",
        )
    stt = catalog.stt_models[inp.stt_model].profiles.get(inp.gpu)
    if stt is None:
        have = ", ".join(catalog.stt_models[inp.stt_model].profiles) or "none"
        raise PlannerInputError(
            "gpu", f"no throughput profile for {inp.stt_model} on {inp.gpu} (profiles: {have})"
        )
    llm = catalog.llm_models[inp.llm_model].profiles.get(inp.gpu)
    if llm is None:
        have = ", ".join(catalog.llm_models[inp.llm_model].profiles) or "none"
        raise PlannerInputError(
            "gpu",
            f"no throughput profile for {inp.llm_model} on {inp.gpu}: it does not fit or was "
            f"not measured there (profiles: {have})",
        )
    g = catalog.gpus[inp.gpu]
    gpu = GpuInfo(name=inp.gpu, **g.model_dump())
    return _Resolved(gpu=gpu, stt=stt, llm=llm)


def tokens_in_per_task(inp: PlanInput) -> int:
    if inp.summary_tokens_in is not None:
        return inp.summary_tokens_in
    return round(
        inp.avg_minutes * inp.words_per_minute * inp.tokens_per_word + inp.prompt_overhead_tokens
    )


def build_cost_model(
    inp: PlanInput, catalog: Catalog
) -> tuple[CostModel, Workload, _Resolved, str]:
    """The :class:`CostModel` for ``inp`` plus the derived workload and a packing note."""
    r = _resolve(inp, catalog)
    active_hours = inp.active_hours_per_day * inp.active_days_per_month
    # GPU demand per monthly task, at peak, with the utilisation headroom.
    peak_per_s_per_task = inp.peak_factor / (active_hours * 3600.0)
    audio_s = inp.avg_minutes * 60.0
    k_stt = peak_per_s_per_task * audio_s / (r.stt.audio_s_per_gpu_s * inp.target_utilization)
    tin = tokens_in_per_task(inp)
    tout = inp.summary_tokens_out
    llm_s = tin / r.llm.prefill_tokens_per_s + tout / r.llm.decode_tokens_per_s
    k_llm = peak_per_s_per_task * llm_s / inp.target_utilization

    vram_needed = r.stt.vram_gb + r.llm.vram_gb
    fits = vram_needed <= r.gpu.vram_gb
    k_packed = (k_stt + k_llm) / inp.packing_efficiency if fits else None
    if inp.packing == "packed" and not fits:
        raise PlannerInputError(
            "packing",
            f"{inp.stt_model} ({r.stt.vram_gb:g} GB) and {inp.llm_model} ({r.llm.vram_gb:g} GB) "
            f"need {vram_needed:g} GB; one {inp.gpu} has {r.gpu.vram_gb:g} GB",
        )
    if inp.packing == "dedicated":
        options: tuple[Option, ...] = ("dedicated",)
    elif inp.packing == "packed":
        options = ("packed",)
    else:
        options = ("dedicated", "packed") if fits else ("dedicated",)
    fit_note = (
        f"both models fit one {inp.gpu}: {vram_needed:g} of {r.gpu.vram_gb:g} GB"
        if fits
        else f"packing impossible: {vram_needed:g} GB needed, one {inp.gpu} has "
        f"{r.gpu.vram_gb:g} GB"
    )

    transcribe = catalog.managed.transcribe
    billed_s = billed_seconds_per_request(
        audio_s, transcribe.minimum_billed_seconds, transcribe.billing_increment_seconds
    )
    bedrock = catalog.managed.bedrock[inp.bedrock_model]
    bedrock_per_task = (
        tin * bedrock.input_usd_per_1k_tokens + tout * bedrock.output_usd_per_1k_tokens
    ) / 1000.0
    hours_per_month = catalog.hours_per_month
    gpu_hours = hours_per_month if inp.always_on else min(hours_per_month, active_hours)
    fixed = (
        sum(fc.monthly_usd(hours_per_month) for fc in catalog.fixed_costs)
        if inp.include_fixed_costs
        else 0.0
    )
    cm = CostModel(
        k_stt=k_stt,
        k_llm=k_llm,
        k_packed=k_packed,
        options=options,
        gpus_per_instance=r.gpu.gpus_per_instance,
        ondemand_usd_per_hour=r.gpu.on_demand_usd_per_hour,
        spot_usd_per_hour=r.gpu.spot_usd_per_hour,
        gpu_hours=gpu_hours,
        spot_share=inp.spot_share,
        spot_overhead=inp.spot_interruption_overhead,
        fixed_monthly_usd=fixed,
        billed_minutes_per_task=billed_s / 60.0,
        tiers=tuple((t.up_to_minutes, t.usd_per_minute) for t in transcribe.tiers),
        bedrock_usd_per_task=bedrock_per_task,
    )
    v = inp.tasks_per_month
    workload = Workload(
        audio_minutes_per_month=v * inp.avg_minutes,
        billed_minutes_per_task=billed_s / 60.0,
        summary_tokens_in_per_task=tin,
        summary_tokens_out_per_task=tout,
        tokens_in_per_month=float(v) * tin,
        tokens_out_per_month=float(v) * tout,
        active_hours_per_month=active_hours,
        peak_tasks_per_hour=v / active_hours * inp.peak_factor,
        peak_audio_seconds_per_second=v * peak_per_s_per_task * audio_s,
        llm_gpu_seconds_per_task=llm_s,
    )
    return cm, workload, r, fit_note


def option_cost(cm: CostModel, option: Option, volume: int, vram_needed: float) -> OptionCost:
    a, b = cm.pool_gpus(option, volume)
    total = a + b
    od, sp, od_i, sp_i = cm.split(total)
    return OptionCost(
        option=option,
        available=True,
        stt_gpus=a,
        llm_gpus=b if option == "dedicated" else a,  # packed: each GPU hosts both models
        total_gpus=total,
        ondemand_gpus=od,
        spot_gpus=sp,
        ondemand_instances=od_i,
        spot_instances=sp_i,
        vram_needed_gb=vram_needed,
        monthly_usd=cm.option_usd(option, volume),
    )


def self_hosted_items(
    cm: CostModel, oc: OptionCost, gpu: GpuInfo, catalog: Catalog, inp: PlanInput
) -> list[LineItem]:
    items: list[LineItem] = []
    hours = cm.gpu_hours
    if oc.ondemand_instances:
        items.append(
            LineItem(
                name=f"GPU nodes on-demand ({gpu.instance_type}, {oc.ondemand_gpus} x {gpu.name})",
                quantity=oc.ondemand_instances * hours,
                unit="instance-hour",
                unit_usd=gpu.on_demand_usd_per_hour,
                monthly_usd=oc.ondemand_instances * hours * gpu.on_demand_usd_per_hour,
                source=gpu.source,
            )
        )
    if oc.spot_instances:
        overhead = 1 + cm.spot_overhead
        items.append(
            LineItem(
                name=f"GPU nodes spot ({gpu.instance_type}, {oc.spot_gpus} x {gpu.name}, "
                f"+{cm.spot_overhead:.0%} interruption overhead)",
                quantity=oc.spot_instances * hours * overhead,
                unit="instance-hour",
                unit_usd=gpu.spot_usd_per_hour,
                monthly_usd=oc.spot_instances * hours * overhead * gpu.spot_usd_per_hour,
                source=gpu.spot_source,
            )
        )
    if inp.include_fixed_costs:
        for fc in catalog.fixed_costs:
            if fc.usd_per_hour is not None:
                qty, unit, unit_usd = fc.quantity * catalog.hours_per_month, "hour", fc.usd_per_hour
            else:
                assert fc.usd_per_month is not None
                qty, unit, unit_usd = fc.quantity, "month", fc.usd_per_month
            items.append(
                LineItem(
                    name=fc.name,
                    quantity=qty,
                    unit=unit,
                    unit_usd=unit_usd,
                    monthly_usd=fc.monthly_usd(catalog.hours_per_month),
                    source=fc.source,
                )
            )
    return items


def managed_items(
    cm: CostModel, inp: PlanInput, catalog: Catalog, workload: Workload
) -> list[LineItem]:
    minutes = cm.transcribe_minutes(inp.tasks_per_month)
    items = transcribe_tier_items(minutes, list(cm.tiers), catalog.managed.transcribe.source)
    bm = catalog.managed.bedrock[inp.bedrock_model]
    items.append(
        LineItem(
            name=f"Bedrock {inp.bedrock_model} input tokens",
            quantity=workload.tokens_in_per_month / 1000.0,
            unit="1K tokens",
            unit_usd=bm.input_usd_per_1k_tokens,
            monthly_usd=workload.tokens_in_per_month / 1000.0 * bm.input_usd_per_1k_tokens,
            source=bm.source,
        )
    )
    items.append(
        LineItem(
            name=f"Bedrock {inp.bedrock_model} output tokens",
            quantity=workload.tokens_out_per_month / 1000.0,
            unit="1K tokens",
            unit_usd=bm.output_usd_per_1k_tokens,
            monthly_usd=workload.tokens_out_per_month / 1000.0 * bm.output_usd_per_1k_tokens,
            source=bm.source,
        )
    )
    return items


def plan(inp: PlanInput, catalog: Catalog, preset: str | None = None) -> PlanResult:
    """Size, price and compare one workload. Raises :class:`PlannerInputError`."""
    from app.planner.advice import replica_advice
    from app.planner.crossover import cost_curve, find_crossover

    cm, workload, r, fit_note = build_cost_model(inp, catalog)
    v = inp.tasks_per_month
    vram_needed = r.stt.vram_gb + r.llm.vram_gb

    dedicated = option_cost(cm, "dedicated", v, vram_needed)
    if cm.k_packed is not None:
        packed = option_cost(cm, "packed", v, vram_needed)
        if "packed" not in cm.options:
            packed.available = False
            packed.reason = "packing: dedicated was requested"
    else:
        packed = OptionCost(
            option="packed", available=False, reason=fit_note, vram_needed_gb=vram_needed
        )
    if "dedicated" not in cm.options:
        dedicated.available = False
        dedicated.reason = "packing: packed was requested"

    chosen = cm.best_option(v)
    candidates = [oc for oc in (dedicated, packed) if oc.monthly_usd is not None]
    cheaper = min(
        candidates, key=lambda oc: (oc.monthly_usd, oc.total_gpus, oc.option != "dedicated")
    ).option
    chosen_oc = dedicated if chosen == "dedicated" else packed
    if packed.monthly_usd is None:
        note = f"Dedicated GPUs ({fit_note})."
    else:
        assert dedicated.monthly_usd is not None
        diff = dedicated.monthly_usd - packed.monthly_usd
        if abs(diff) < 0.005:
            note = (
                f"Packed ({packed.total_gpus} GPUs) and dedicated ({dedicated.total_gpus} GPUs) "
                f"cost the same here ({fit_note})."
            )
        else:
            note = (
                f"{'Packing' if diff > 0 else 'Dedicated'} is cheaper by "
                f"${abs(diff):,.2f}/month ({fit_note}; packed throughput x "
                f"{inp.packing_efficiency:g})."
            )
        if chosen != cheaper:
            note += f" Using {chosen} as requested."

    stt_exact = cm.k_stt * v
    llm_exact = cm.k_llm * v
    sizing = Sizing(
        stt_gpus_exact=stt_exact,
        llm_gpus_exact=llm_exact,
        packed_gpus_exact=cm.k_packed * v if cm.k_packed is not None else None,
        dedicated=dedicated,
        packed=packed,
        chosen=chosen,
        cheaper_option=cheaper,
        note=note,
        stt_gpus=chosen_oc.stt_gpus,
        llm_gpus=chosen_oc.llm_gpus,
        total_gpus=chosen_oc.total_gpus,
    )

    sh_items = self_hosted_items(cm, chosen_oc, r.gpu, catalog, inp)
    sh_total = sum(i.monthly_usd for i in sh_items)
    mg_items = managed_items(cm, inp, catalog, workload)
    mg_total = sum(i.monthly_usd for i in mg_items)
    self_hosted = CostBreakdown(
        line_items=sh_items, monthly_usd=sh_total, per_task_usd=sh_total / v
    )
    managed = CostBreakdown(line_items=mg_items, monthly_usd=mg_total, per_task_usd=mg_total / v)
    savings = mg_total - sh_total

    crossover = find_crossover(cm)
    curve = cost_curve(cm, v, crossover.tasks_per_month, inp.curve_points)
    advice = replica_advice(cm, inp, chosen, r.gpu.name)

    used: set[str] = {
        r.gpu.source,
        r.gpu.spot_source,
        r.stt.source,
        r.llm.source,
        catalog.managed.transcribe.source,
        catalog.managed.bedrock[inp.bedrock_model].source,
    }
    used |= {i.source for i in sh_items if i.source}
    sources = {sid: catalog.sources[sid] for sid in sorted(used) if sid in catalog.sources}

    notes: list[str] = []
    for label, prof in (("STT", r.stt), ("LLM", r.llm)):
        if prof.basis == "estimate":
            notes.append(
                f"{label} throughput on {inp.gpu} is a planning estimate; calibrate on the "
                "target GPU (`aipp plan --calibrate`) before relying on GPU counts near a step."
            )
        elif prof.basis == "measured" and prof.source in catalog.sources:
            where = catalog.sources[prof.source].title.split(":")[0]
            notes.append(f"{label} throughput for {inp.gpu} replaced by a measurement ({where}).")
    if workload.billed_minutes_per_task * 60 > inp.avg_minutes * 60 + 1e-9:
        notes.append(
            "Transcribe bills each request at least "
            f"{catalog.managed.transcribe.minimum_billed_seconds:g} s; this workload's tasks "
            "are shorter, so managed minutes exceed audio minutes."
        )
    notes.append(
        "Managed cost assumes every task is the average length; tiers apply to the whole "
        "account's monthly minutes."
    )
    if not inp.always_on:
        notes.append(
            f"GPUs billed only for the {cm.gpu_hours:g} active hours; expect cold starts "
            "outside them."
        )

    return PlanResult(
        preset=preset,
        inputs=inp,
        gpu=r.gpu,
        stt=SttInfo(model=inp.stt_model, **r.stt.model_dump()),
        llm=LlmInfo(model=inp.llm_model, **r.llm.model_dump()),
        bedrock_model=inp.bedrock_model,
        workload=workload,
        sizing=sizing,
        self_hosted=self_hosted,
        managed=managed,
        savings_monthly_usd=savings,
        savings_pct=(savings / mg_total * 100.0) if mg_total > 0 else 0.0,
        cheaper="self_hosted" if sh_total <= mg_total else "managed",
        crossover=crossover,
        curve=curve,
        replica_advice=advice,
        sources=sources,
        notes=notes,
    )
