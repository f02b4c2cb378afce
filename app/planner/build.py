"""Workload in, cost model out: :func:`build` for :func:`~app.planner.plan.plan`.

Resolves the catalog entries an input names, turns the workload into GPU pools and a
self-hosted :class:`CostModel`, and prices the managed baselines (managed.py) as
functions of monthly volume. Built once for the plan and once per corner of the
sensitivity band (a :class:`Scenario`).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.planner.catalog import Catalog, DiarizerProfile, LlmProfile, SttProfile
from app.planner.costs import Baseline, CostModel, PoolSpec, billed_seconds_per_request
from app.planner.managed import FixedRow, support_fee
from app.planner.managed import baselines as managed_baselines
from app.planner.schemas import GpuInfo, Option, PlanInput, PlannerInputError, Workload
from app.planner.stats import p95_factor


@dataclass(frozen=True)
class Scenario:
    """Multipliers for the sensitivity band (1.0 everywhere = the plan itself)."""

    throughput: float = 1.0
    peak: float = 1.0
    gpu_price: float = 1.0
    managed_price: float = 1.0


FAVOURABLE = Scenario(throughput=1.5, peak=0.75, gpu_price=0.9, managed_price=1.1)
UNFAVOURABLE = Scenario(throughput=0.5, peak=1.5, gpu_price=1.1, managed_price=0.9)


@dataclass(frozen=True)
class Resolved:
    gpu: GpuInfo
    stt: SttProfile
    llm: LlmProfile
    diarizer: DiarizerProfile | None


def resolve(inp: PlanInput, catalog: Catalog) -> Resolved:
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
    known_stt = ["aws-transcribe", *catalog.managed.stt_apis]
    if inp.managed_stt not in known_stt:
        raise PlannerInputError(
            "managed_stt",
            f"unknown managed STT API '{inp.managed_stt}'; known: {', '.join(known_stt)}",
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
    diarizer = None
    if inp.diarize:
        key = "cpu" if inp.diarizer_device == "cpu" else inp.gpu
        diarizer = catalog.diarizer.profiles.get(key)
        if diarizer is None:
            raise PlannerInputError(
                "diarizer_device",
                f"no diarizer profile for '{key}' (profiles: "
                f"{', '.join(catalog.diarizer.profiles) or 'none'})",
            )
        if inp.diarizer_audio_s_per_s is not None:
            diarizer = diarizer.model_copy(
                update={"audio_s_per_s": inp.diarizer_audio_s_per_s, "basis": "measured"}
            )
    g = catalog.gpus[inp.gpu]
    return Resolved(GpuInfo(name=inp.gpu, **g.model_dump()), stt, llm, diarizer)


def tokens_in_per_task(inp: PlanInput) -> int:
    if inp.summary_tokens_in is not None:
        return inp.summary_tokens_in
    return round(
        inp.avg_minutes * inp.words_per_minute * inp.tokens_per_word + inp.prompt_overhead_tokens
    )


def fixed_costs(catalog: Catalog, inp: PlanInput, side: str) -> list[FixedRow]:
    """(name, quantity, unit, unit_usd, monthly, source, per_node) of fixed costs on ``side``."""
    out = []
    if not inp.include_fixed_costs:
        return out
    hours = catalog.hours_per_month
    for fc in catalog.fixed_costs:
        if fc.side != side:
            continue
        q = fc.ha_quantity if (inp.ha and fc.ha_quantity is not None) else fc.quantity
        if fc.usd_per_hour is not None:
            row = (fc.name, q * hours, "hour", fc.usd_per_hour, fc.monthly_usd(hours, q))
        else:
            assert fc.usd_per_month is not None
            row = (fc.name, q, "month", fc.usd_per_month, fc.monthly_usd(hours, q))
        out.append((*row, fc.source, fc.per_gpu_node))
    return out


@dataclass
class Built:
    cm: CostModel
    workload: Workload
    r: Resolved
    fit_note: str
    baselines: list[Baseline]
    vram_needed: float


def pool_specs(inp: PlanInput, r: Resolved, sc: Scenario) -> list[PoolSpec]:
    """The pools for ``inp``: service times, their variability and their p95 (gamma).

    Service time scales with audio length for STT and the diarizer (``cs2 = cv^2``). An
    LLM call has a fixed part (prompt overhead, output) and a part that grows with the
    transcript, so only that share varies: ``cs2 = (share * cv)^2``.
    """
    cv = inp.duration_cv
    g95 = p95_factor(cv)
    audio_s = inp.avg_minutes * 60.0
    util = inp.target_utilization
    tin = tokens_in_per_task(inp)
    prefill = r.llm.prefill_tokens_per_s * sc.throughput
    llm_s = tin / prefill + inp.summary_tokens_out / (r.llm.decode_tokens_per_s * sc.throughput)
    transcript = 0.0
    if inp.summary_tokens_in is None:
        transcript = inp.avg_minutes * inp.words_per_minute * inp.tokens_per_word / prefill
    share = min(1.0, transcript / llm_s)
    llm_p95 = llm_s - transcript + transcript * g95
    k = r.llm.batch_size
    stt_s = audio_s / (r.stt.audio_s_per_gpu_s * sc.throughput)
    pools = [
        PoolSpec("stt", stt_s, 1, cv * cv, 1, True, util, stt_s * g95),
        PoolSpec("llm", llm_s * k, k, (share * cv) ** 2, 2, True, util, llm_p95 * k),
    ]
    if r.diarizer is not None:
        d_s = audio_s / (r.diarizer.audio_s_per_s * sc.throughput)
        on_gpu = inp.diarizer_device == "gpu"
        pools.append(PoolSpec("diarizer", d_s, 1, cv * cv, 1, on_gpu, util, d_s * g95))
    return pools


def delay_allowance_s(inp: PlanInput) -> float:
    """Scale-up delay a task may meet: with spot (a reclaimed node is replaced) or with
    GPUs that run only in the active hours (the day starts cold). A stated assumption."""
    if inp.spot_share > 0 or not inp.always_on:
        return inp.scale_up_delay_minutes * 60.0
    return 0.0


def build(inp: PlanInput, catalog: Catalog, sc: Scenario = Scenario()) -> Built:
    """The cost model and managed baselines for ``inp`` under scenario ``sc``."""
    r = resolve(inp, catalog)
    active_hours = inp.active_hours_per_day * inp.active_days_per_month
    peak = min(24.0, inp.active_hours_per_day, max(1.0, inp.peak_factor * sc.peak))
    arrivals_per_task = peak / (active_hours * 3600.0)
    audio_s = inp.avg_minutes * 60.0
    tin = tokens_in_per_task(inp)
    tout = inp.summary_tokens_out
    pools = pool_specs(inp, r, sc)
    llm_s = pools[1].service_s / pools[1].slots

    vram_needed = r.stt.vram_gb + r.llm.vram_gb
    fits = vram_needed <= r.gpu.vram_gb
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

    hours = catalog.hours_per_month
    gpu_hours = hours if inp.always_on else min(hours, active_hours)
    discount = 0.0
    if inp.commitment != "none":
        com = catalog.commitments.get(inp.commitment)
        if com is None:
            raise PlannerInputError(
                "commitment", f"the catalog has no '{inp.commitment}' commitment rate"
            )
        discount = com.discount if inp.always_on else 0.0
    own = fixed_costs(catalog, inp, "self_hosted")
    shared = fixed_costs(catalog, inp, "both")
    cpu_price = r.diarizer.usd_per_hour if (r.diarizer and r.diarizer.usd_per_hour) else 0.0
    cm = CostModel(
        pools=tuple(pools),
        method=inp.sizing,
        p95_target_s=inp.p95_minutes * 60.0,
        delay_s=delay_allowance_s(inp),
        max_utilization=inp.max_utilization,
        duration_cv=inp.duration_cv,
        arrivals_per_task=arrivals_per_task,
        options=options,
        packing_efficiency=inp.packing_efficiency,
        gpus_per_instance=r.gpu.gpus_per_instance,
        ondemand_usd_per_hour=r.gpu.on_demand_usd_per_hour * sc.gpu_price,
        spot_usd_per_hour=r.gpu.spot_usd_per_hour * sc.gpu_price,
        commitment_discount=discount,
        gpu_hours=gpu_hours,
        spot_share=inp.spot_share,
        spot_overhead=inp.spot_interruption_overhead,
        ha=inp.ha,
        cpu_node_usd_per_hour=cpu_price,
        cpu_node_hours=gpu_hours,
        fixed_monthly_usd=sum(row[4] for row in own if not row[6]),
        shared_monthly_usd=sum(row[4] for row in shared),
        per_node_monthly_usd=sum(row[4] for row in own if row[6]),
        ops_monthly_usd=inp.ops_hours_per_month * inp.ops_usd_per_hour,
        support=support_fee(catalog, inp),
    )
    bases = managed_baselines(catalog, inp, tin, tout, shared, sc.managed_price)

    tr = catalog.managed.transcribe
    tr_billed_min = (
        billed_seconds_per_request(audio_s, tr.minimum_billed_seconds, tr.billing_increment_seconds)
        / 60.0
    )
    v = inp.tasks_per_month
    workload = Workload(
        audio_minutes_per_month=v * inp.avg_minutes,
        billed_minutes_per_task=tr_billed_min,
        summary_tokens_in_per_task=tin,
        summary_tokens_out_per_task=tout,
        tokens_in_per_month=float(v) * tin,
        tokens_out_per_month=float(v) * tout,
        active_hours_per_month=active_hours,
        peak_tasks_per_hour=v / active_hours * peak,
        peak_audio_seconds_per_second=v * arrivals_per_task * audio_s,
        llm_gpu_seconds_per_task=llm_s,
    )
    return Built(cm, workload, r, fit_note, bases, vram_needed)


def chosen_id(inp: PlanInput) -> str:
    return f"{inp.managed_stt}+{'batch' if inp.bedrock_batch else 'on-demand'}"


def chosen_baseline(built: Built, inp: PlanInput) -> Baseline:
    return next(b for b in built.baselines if b.id == chosen_id(inp))


def build_cost_model(inp: PlanInput, catalog: Catalog) -> tuple[CostModel, Workload, Resolved, str]:
    """The :class:`CostModel` for ``inp`` plus the derived workload and a packing note."""
    b = build(inp, catalog)
    return b.cm, b.workload, b.r, b.fit_note
