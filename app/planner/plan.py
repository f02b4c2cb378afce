"""Workload in, pool sizes, predicted waits and monthly costs out: :func:`plan`.

Pure functions over a :class:`Catalog`; every formula is written out in
``docs/planner.md`` with a worked example. The work of one plan is bounded: sizing is
O(log) or O(sqrt(load)) per pool, the crossover search a fixed number of evaluations,
and a :class:`~app.planner.queueing.WorkMeter` enforces the total.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from app.planner.advice import replica_advice
from app.planner.catalog import Catalog, DiarizerProfile, LlmProfile, SttProfile
from app.planner.costs import (
    Baseline,
    CostModel,
    PoolResult,
    PoolSpec,
    PoolTooLarge,
    billed_seconds_per_request,
    transcribe_tier_items,
    transcribe_usd,
)
from app.planner.crossover import cost_curve, curve_volumes, find_crossover, sizable
from app.planner.queueing import WorkMeter, reset_meter, use_meter
from app.planner.schemas import (
    Band,
    CostBreakdown,
    GpuInfo,
    LineItem,
    LlmInfo,
    ManagedBaseline,
    Option,
    OptionCost,
    PlanInput,
    PlannerInputError,
    PlanResult,
    PoolSizing,
    Sizing,
    SttInfo,
    Workload,
)

STALE_AFTER_DAYS = 183  # six months


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


FixedRow = tuple[str, float, str, float, float, str, bool]


def _fixed(catalog: Catalog, inp: PlanInput, side: str) -> list[FixedRow]:
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


def build(inp: PlanInput, catalog: Catalog, sc: Scenario = Scenario()) -> Built:
    """The cost model and managed baselines for ``inp`` under scenario ``sc``."""
    r = resolve(inp, catalog)
    active_hours = inp.active_hours_per_day * inp.active_days_per_month
    peak = min(24.0, max(1.0, inp.peak_factor * sc.peak))
    arrivals_per_task = peak / (active_hours * 3600.0)
    audio_s = inp.avg_minutes * 60.0
    tin = tokens_in_per_task(inp)
    tout = inp.summary_tokens_out
    llm_s = (tin / r.llm.prefill_tokens_per_s + tout / r.llm.decode_tokens_per_s) / sc.throughput
    cs2 = inp.duration_cv**2
    util = inp.target_utilization
    pools = [
        PoolSpec("stt", audio_s / (r.stt.audio_s_per_gpu_s * sc.throughput), 1, cs2, 1, True, util),
        PoolSpec("llm", llm_s * r.llm.batch_size, r.llm.batch_size, cs2, 2, True, util),
    ]
    if r.diarizer is not None:
        pools.append(
            PoolSpec(
                "diarizer",
                audio_s / (r.diarizer.audio_s_per_s * sc.throughput),
                1,
                cs2,
                1,
                inp.diarizer_device == "gpu",
                util,
            )
        )

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
    own = _fixed(catalog, inp, "self_hosted")
    shared = _fixed(catalog, inp, "both")
    ops = inp.ops_hours_per_month * inp.ops_usd_per_hour
    fixed = sum(row[4] for row in own if not row[6]) + ops
    per_node = sum(row[4] for row in own if row[6])
    shared_usd = sum(row[4] for row in shared)
    cpu_price = r.diarizer.usd_per_hour if (r.diarizer and r.diarizer.usd_per_hour) else 0.0
    cm = CostModel(
        pools=tuple(pools),
        method=inp.sizing,
        p95_target_s=inp.p95_minutes * 60.0,
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
        fixed_monthly_usd=fixed,
        shared_monthly_usd=shared_usd,
        per_node_monthly_usd=per_node,
    )

    # ---- managed baselines
    bm = catalog.managed.bedrock[inp.bedrock_model]
    bedrock_task = (tin * bm.input_usd_per_1k_tokens + tout * bm.output_usd_per_1k_tokens) / 1000
    bedrock_task *= sc.managed_price
    shared_rows = shared
    baselines: list[Baseline] = []
    tr = catalog.managed.transcribe
    tiers = [(t.up_to_minutes, t.usd_per_minute * sc.managed_price) for t in tr.tiers]
    tr_billed_min = (
        billed_seconds_per_request(audio_s, tr.minimum_billed_seconds, tr.billing_increment_seconds)
        / 60.0
    )
    for mode in ("on-demand", "batch"):
        factor = 1.0 if mode == "on-demand" else (1 - bm.batch_discount)
        llm_task = bedrock_task * factor
        mode_name = "Bedrock batch" if mode == "batch" else "Bedrock"
        llm_label = f"{mode_name} {inp.bedrock_model}"

        def llm_items(v: int, factor: float = factor, label: str = llm_label) -> list[LineItem]:
            def tokens(kind: str, per_task: float, usd_per_1k: float) -> LineItem:
                unit_usd = usd_per_1k * factor * sc.managed_price
                return LineItem(
                    name=f"{label} {kind} tokens",
                    quantity=v * per_task / 1000.0,
                    unit="1K tokens",
                    unit_usd=unit_usd,
                    monthly_usd=v * per_task / 1000.0 * unit_usd,
                    source=bm.source,
                )

            return [
                tokens("input", tin, bm.input_usd_per_1k_tokens),
                tokens("output", tout, bm.output_usd_per_1k_tokens),
            ]

        def shared_items() -> list[LineItem]:
            return [
                LineItem(name=n, quantity=q, unit=u, unit_usd=uu, monthly_usd=m, source=s)
                for n, q, u, uu, m, s, _ in shared_rows
            ]

        diar_t = catalog.managed.transcribe_diarization_usd_per_minute if inp.diarize else 0.0

        def tr_cost(v: int, llm_task: float = llm_task, diar_t: float = diar_t) -> float:
            minutes = v * tr_billed_min
            return transcribe_usd(minutes, tiers) + minutes * diar_t + v * llm_task + shared_usd

        def tr_items(
            v: int, llm_items=llm_items, shared_items=shared_items, diar_t: float = diar_t
        ) -> list[LineItem]:
            minutes = v * tr_billed_min
            items = transcribe_tier_items(minutes, tiers, tr.source)
            if diar_t:
                items.append(
                    LineItem(
                        name="Transcribe speaker identification",
                        quantity=minutes,
                        unit="minute",
                        unit_usd=diar_t,
                        monthly_usd=minutes * diar_t,
                        source=tr.source,
                    )
                )
            return items + llm_items(v) + shared_items()

        baselines.append(
            Baseline(
                id=f"aws-transcribe+{mode}",
                name=f"Amazon Transcribe + {llm_label}",
                stt_api="aws-transcribe",
                bedrock_mode=mode,
                cost=tr_cost,
                items=tr_items,
            )
        )
        for api_id, api in catalog.managed.stt_apis.items():
            billed = (
                billed_seconds_per_request(
                    audio_s, api.minimum_billed_seconds, api.billing_increment_seconds
                )
                / 60.0
            )
            rate = api.usd_per_minute * sc.managed_price
            notes: tuple[str, ...] = ()
            diar = 0.0
            if inp.diarize:
                if api.diarization_usd_per_minute is None:
                    notes = (f"{api.name} has no speaker labels; priced without diarization.",)
                else:
                    diar = api.diarization_usd_per_minute * sc.managed_price

            def api_cost(
                v: int, billed=billed, rate=rate, diar=diar, llm_task: float = llm_task
            ) -> float:
                return v * billed * (rate + diar) + v * llm_task + shared_usd

            def api_items(
                v: int,
                billed=billed,
                rate=rate,
                diar=diar,
                api=api,
                llm_items=llm_items,
                shared_items=shared_items,
            ) -> list[LineItem]:
                items = [
                    LineItem(
                        name=f"{api.name} ({api.basis})",
                        quantity=v * billed,
                        unit="minute",
                        unit_usd=rate,
                        monthly_usd=v * billed * rate,
                        source=api.source,
                    )
                ]
                if diar:
                    items.append(
                        LineItem(
                            name=f"{api.name} speaker labels",
                            quantity=v * billed,
                            unit="minute",
                            unit_usd=diar,
                            monthly_usd=v * billed * diar,
                            source=api.source,
                        )
                    )
                return items + llm_items(v) + shared_items()

            baselines.append(
                Baseline(
                    id=f"{api_id}+{mode}",
                    name=f"{api.name} + {llm_label}",
                    stt_api=api_id,
                    bedrock_mode=mode,
                    cost=api_cost,
                    items=api_items,
                    notes=notes,
                )
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
    return Built(cm, workload, r, fit_note, baselines, vram_needed)


def chosen_baseline(built: Built, inp: PlanInput) -> Baseline:
    mode = "batch" if inp.bedrock_batch else "on-demand"
    return next(b for b in built.baselines if b.id == f"{inp.managed_stt}+{mode}")


def build_cost_model(inp: PlanInput, catalog: Catalog) -> tuple[CostModel, Workload, Resolved, str]:
    """The :class:`CostModel` for ``inp`` plus the derived workload and a packing note."""
    b = build(inp, catalog)
    return b.cm, b.workload, b.r, b.fit_note


# ---------------------------------------------------------------------------- plan


def _option_cost(built: Built, option: Option, v: int) -> OptionCost:
    cm = built.cm
    sized = cm.size(option, v)
    stt, llm, _diar = cm.gpu_counts(option, sized)
    total = cm.total_gpus(option, sized)
    inst = cm.instances(total)
    spot_gpus = min(total, int(-(-total * cm.spot_share // 1)))  # ceil, for node groups
    return OptionCost(
        option=option,
        available=True,
        stt_gpus=stt,
        llm_gpus=llm,
        total_gpus=total,
        ondemand_gpus=total - int(total * cm.spot_share),
        spot_gpus=spot_gpus,
        ondemand_instances=inst,
        spot_instances=cm.instances(spot_gpus) if cm.spot_share > 0 else 0,
        vram_needed_gb=built.vram_needed,
        monthly_usd=cm.option_usd(option, v),
    )


def _pool_models(
    built: Built, inp: PlanInput, option: Option, sized: dict[str, PoolResult]
) -> list[PoolSizing]:
    cm, r = built.cm, built.r
    lam = inp.tasks_per_month * cm.arrivals_per_task
    out = []
    for name, res in sized.items():
        w = res.waits
        spec = res.spec
        if name == "diarizer":
            assert r.diarizer is not None
            device = "cpu" if not spec.on_gpu else r.gpu.name
            basis = r.diarizer.basis
            audio_h_per_h = r.diarizer.audio_s_per_s  # audio hours per node-hour
            unit_usd = (
                r.diarizer.usd_per_hour
                if not spec.on_gpu
                else r.gpu.on_demand_usd_per_hour / r.gpu.gpus_per_instance
            ) or 0.0
            per_audio_hour = unit_usd / audio_h_per_h
        else:
            device = r.gpu.name
            basis = r.stt.basis if name == "stt" else r.llm.basis
            per_audio_hour = None
        pool = "packed" if option == "packed" and name in ("stt", "llm") else name
        out.append(
            PoolSizing(
                pool=pool if pool != "packed" else name,  # keep the model's name
                device=device,
                gpus=res.gpus + cm.spares(),
                spares=cm.spares(),
                servers_per_gpu=spec.slots,
                service_s=spec.service_s,
                offered_load=lam * spec.service_s,
                utilization=w.utilization,
                prob_wait=w.prob_wait,
                wait_p50_s=w.p50_wait_s if w.stable else None,
                wait_p95_s=w.p95_wait_s if w.stable else None,
                throughput_gpus_exact=lam * spec.service_s / spec.slots,
                basis=basis,
                usd_per_audio_hour=per_audio_hour,
            )
        )
    return out


def _self_hosted_items(
    built: Built,
    inp: PlanInput,
    catalog: Catalog,
    oc: OptionCost,
    sized: dict[str, PoolResult],
) -> list[LineItem]:
    cm, gpu = built.cm, built.r.gpu
    items: list[LineItem] = []
    inst = cm.instances(oc.total_gpus)
    hours = cm.gpu_hours
    od_rate = gpu.on_demand_usd_per_hour * (1 - cm.commitment_discount)
    if cm.spot_share < 1 and inst:
        label = "on-demand" if cm.commitment_discount == 0 else f"{inp.commitment} rate"
        qty = inst * hours * (1 - cm.spot_share)
        items.append(
            LineItem(
                name=f"GPU nodes {label} ({gpu.instance_type}, {oc.total_gpus} x {gpu.name}"
                + (f", {1 - cm.spot_share:.0%} of hours" if cm.spot_share else "")
                + ")",
                quantity=qty,
                unit="instance-hour",
                unit_usd=od_rate,
                monthly_usd=qty * od_rate,
                source=gpu.source,
            )
        )
    if cm.spot_share > 0 and inst:
        qty = inst * hours * cm.spot_share * (1 + cm.spot_overhead)
        items.append(
            LineItem(
                name=f"GPU nodes spot ({gpu.instance_type}, {cm.spot_share:.0%} of hours, "
                f"+{cm.spot_overhead:.0%} re-run after interruptions)",
                quantity=qty,
                unit="instance-hour",
                unit_usd=gpu.spot_usd_per_hour,
                monthly_usd=qty * gpu.spot_usd_per_hour,
                source=gpu.spot_source,
            )
        )
    nodes = cm.cpu_nodes(sized)
    if nodes and built.r.diarizer is not None:
        d = built.r.diarizer
        items.append(
            LineItem(
                name=f"Diarizer CPU nodes ({d.instance_type}, {nodes})",
                quantity=nodes * hours,
                unit="instance-hour",
                unit_usd=cm.cpu_node_usd_per_hour,
                monthly_usd=nodes * hours * cm.cpu_node_usd_per_hour,
                source=d.source,
            )
        )
    for name, q, unit, uu, m, src, per_node in _fixed(catalog, inp, "self_hosted"):
        if per_node:
            q, m = q * inst, m * inst
        items.append(
            LineItem(name=name, quantity=q, unit=unit, unit_usd=uu, monthly_usd=m, source=src)
        )
    for name, q, unit, uu, m, src, _ in _fixed(catalog, inp, "both"):
        items.append(
            LineItem(
                name=name + " (both sides)",
                quantity=q,
                unit=unit,
                unit_usd=uu,
                monthly_usd=m,
                source=src,
            )
        )
    if inp.ops_hours_per_month:
        items.append(
            LineItem(
                name="Operations (engineer hours)",
                quantity=inp.ops_hours_per_month,
                unit="hour",
                unit_usd=inp.ops_usd_per_hour,
                monthly_usd=inp.ops_hours_per_month * inp.ops_usd_per_hour,
                source="ops-estimate",
            )
        )
    return items


def _age_days(as_of: str, today: dt.date) -> int | None:
    try:
        return (today - dt.date.fromisoformat(as_of[:10])).days
    except ValueError:
        return None


def plan(
    inp: PlanInput,
    catalog: Catalog,
    preset: str | None = None,
    *,
    today: dt.date | None = None,
    meter: WorkMeter | None = None,
) -> PlanResult:
    """Size, price and compare one workload. Raises :class:`PlannerInputError`."""
    meter = meter or WorkMeter()
    token = use_meter(meter)
    try:
        return _plan(inp, catalog, preset, today or dt.date.today(), meter)
    finally:
        reset_meter(token)


def _plan(
    inp: PlanInput, catalog: Catalog, preset: str | None, today: dt.date, meter: WorkMeter
) -> PlanResult:
    built = build(inp, catalog)
    cm = built.cm
    v = inp.tasks_per_month

    dedicated = (
        _option_cost(built, "dedicated", v)
        if "dedicated" in cm.options
        else OptionCost(option="dedicated", available=False, reason="packing: packed was requested")
    )
    if "packed" in cm.options:
        packed = _option_cost(built, "packed", v)
    else:
        reason = (
            "packing: dedicated was requested"
            if built.fit_note.startswith("both")
            else built.fit_note
        )
        packed = OptionCost(
            option="packed", available=False, reason=reason, vram_needed_gb=built.vram_needed
        )
    chosen = cm.best_option(v)
    candidates = [oc for oc in (dedicated, packed) if oc.monthly_usd is not None]
    cheaper_opt = min(
        candidates, key=lambda oc: (oc.monthly_usd, oc.total_gpus, oc.option != "dedicated")
    ).option
    chosen_oc = dedicated if chosen == "dedicated" else packed
    if packed.monthly_usd is None or dedicated.monthly_usd is None:
        note = f"{chosen.capitalize()} GPUs ({built.fit_note})."
    else:
        diff = dedicated.monthly_usd - packed.monthly_usd
        if abs(diff) < 0.005:
            note = (
                f"Packed ({packed.total_gpus} GPUs) and dedicated ({dedicated.total_gpus} GPUs) "
                f"cost the same here ({built.fit_note})."
            )
        else:
            note = (
                f"{'Packing' if diff > 0 else 'Dedicated'} is cheaper by "
                f"${abs(diff):,.2f}/month ({built.fit_note}; packed throughput x "
                f"{inp.packing_efficiency:g})."
            )

    sized = cm.size(chosen, v)
    pools = _pool_models(built, inp, chosen, sized)
    predicted = cm.predicted_p95_s(sized)
    lam = v * cm.arrivals_per_task
    stt_spec = next(p for p in cm.pools if p.name == "stt")
    llm_spec = next(p for p in cm.pools if p.name == "llm")
    stt_exact = lam * stt_spec.service_s / stt_spec.slots
    llm_exact = lam * llm_spec.service_s / llm_spec.slots
    if inp.sizing == "throughput":
        stt_exact /= inp.target_utilization
        llm_exact /= inp.target_utilization
    target_s = inp.p95_minutes * 60.0
    sizing = Sizing(
        method=inp.sizing,
        p95_target_s=target_s if inp.sizing == "queueing" else None,
        predicted_p95_s=predicted if predicted != float("inf") else None,
        meets_target=predicted <= target_s + 1e-6,
        pools=pools,
        stt_gpus_exact=stt_exact,
        llm_gpus_exact=llm_exact,
        packed_gpus_exact=(stt_exact + llm_exact) / inp.packing_efficiency
        if "packed" in cm.options
        else None,
        dedicated=dedicated,
        packed=packed,
        chosen=chosen,
        cheaper_option=cheaper_opt,
        note=note,
        stt_gpus=chosen_oc.stt_gpus,
        llm_gpus=chosen_oc.llm_gpus,
        diarizer_units=sized["diarizer"].gpus + cm.spares() if "diarizer" in sized else 0,
        total_gpus=chosen_oc.total_gpus,
    )

    sh_items = _self_hosted_items(built, inp, catalog, chosen_oc, sized)
    sh_total = sum(i.monthly_usd for i in sh_items)
    self_hosted = CostBreakdown(
        line_items=sh_items, monthly_usd=sh_total, per_task_usd=sh_total / v
    )

    base = chosen_baseline(built, inp)
    mg_items = base.items(v)
    mg_total = sum(i.monthly_usd for i in mg_items)
    managed = CostBreakdown(line_items=mg_items, monthly_usd=mg_total, per_task_usd=mg_total / v)

    baselines: list[ManagedBaseline] = []
    for b in built.baselines:
        cost = b.cost(v)
        baselines.append(
            ManagedBaseline(
                id=b.id,
                name=b.name,
                stt_api=b.stt_api,
                bedrock_mode=b.bedrock_mode,  # type: ignore[arg-type]
                monthly_usd=cost,
                per_task_usd=cost / v,
                cheaper="self_hosted" if sh_total <= cost else "managed",
                crossover=find_crossover(cm, b.cost, b.name),
                notes=list(b.notes),
            )
        )
    cheapest = min(baselines, key=lambda b: b.monthly_usd)
    crossover = next(b.crossover for b in baselines if b.id == base.id)

    def cheapest_cost(x: int) -> float:
        return min(b.cost(x) for b in built.baselines)

    vols = curve_volumes(
        v, [crossover.tasks_per_month, cheapest.crossover.tasks_per_month], inp.curve_points
    )
    curve = cost_curve(cm, base.cost, cheapest_cost, vols)
    vols = curve.tasks_per_month

    # ---- sensitivity band
    corners = []
    for sc in (FAVOURABLE, UNFAVOURABLE):
        bb = build(inp, catalog, sc)
        cb = chosen_baseline(bb, inp)
        ok = sizable(bb.cm, vols)
        line = [round(bb.cm.self_hosted(x), 2) for x in ok]
        line += [math.inf] * (len(vols) - len(ok))  # beyond the pool limit
        corners.append(
            (
                find_crossover(bb.cm, cb.cost).tasks_per_month,
                line,
                _cost_or_inf(bb.cm, v),
            )
        )
    band = Band(
        assumptions=[
            "favourable: throughput x1.5, peak factor x0.75 (at least 1), GPU prices x0.9, "
            "managed prices x1.1",
            "unfavourable: throughput x0.5, peak factor x1.5 (at most 24), GPU prices x1.1, "
            "managed prices x0.9",
        ],
        crossover_low=corners[0][0],
        crossover_high=corners[1][0],
        self_hosted_low_usd=_finite(
            [min(a, b) for a, b in zip(corners[0][1], corners[1][1], strict=True)]
        ),
        self_hosted_high_usd=_finite(
            [max(a, b) for a, b in zip(corners[0][1], corners[1][1], strict=True)]
        ),
        monthly_usd_low=_finite_or_none(min(corners[0][2], corners[1][2])),
        monthly_usd_high=_finite_or_none(max(corners[0][2], corners[1][2])),
    )

    advice = replica_advice(cm, inp, chosen, built.r.gpu.name)

    # ---- sources, warnings, notes
    used: set[str] = {
        built.r.gpu.source,
        built.r.gpu.spot_source,
        built.r.stt.source,
        built.r.llm.source,
        catalog.managed.transcribe.source,
        catalog.managed.bedrock[inp.bedrock_model].source,
    }
    used |= {api.source for api in catalog.managed.stt_apis.values()}
    used |= {i.source for i in sh_items if i.source}
    if built.r.diarizer is not None:
        used.add(built.r.diarizer.source)
    if inp.commitment != "none":
        used.add(catalog.commitments[inp.commitment].source)
    bm = catalog.managed.bedrock[inp.bedrock_model]
    if bm.retired:
        used.add("aws-bedrock-lifecycle")
    sources = {sid: catalog.sources[sid] for sid in sorted(used) if sid in catalog.sources}

    warnings: list[str] = []
    age = _age_days(catalog.as_of, today)
    if age is None or age > STALE_AFTER_DAYS:
        warnings.append(
            f"The price catalog was last reviewed on {catalog.as_of}, more than six months "
            "ago: prices may have changed. Update catalog.yaml or pass --catalog."
        )
    if bm.retired:
        warnings.append(
            f"Bedrock model '{inp.bedrock_model}' is marked retired. {bm.lifecycle_note}".strip()
        )
    if inp.sizing == "queueing" and not sizing.meets_target:
        warnings.append(
            f"The p95 target of {inp.p95_minutes:g} min cannot be met: service time alone "
            f"takes {cm.stage_service_p95(list(cm.pools)) / 60:.1f} min at p95 on {inp.gpu}. "
            "Pools are sized so that waiting adds almost nothing."
        )

    notes: list[str] = []
    stale_sources = [
        sid for sid, s in sources.items() if (_age_days(s.as_of, today) or 0) > STALE_AFTER_DAYS
    ]
    if stale_sources:
        notes.append(
            "Sources dated more than six months ago (not re-checked at the last review): "
            + ", ".join(stale_sources)
            + "."
        )
    for label, prof in (("STT", built.r.stt), ("LLM", built.r.llm), ("Diarizer", built.r.diarizer)):
        if prof is None:
            continue
        if prof.basis == "estimate":
            where = "CPU" if label == "Diarizer" and inp.diarizer_device == "cpu" else inp.gpu
            how = (
                "bench/diarization.py, then diarizer_audio_s_per_s"
                if label == "Diarizer"
                else "`aipp plan --calibrate`"
            )
            notes.append(
                f"{label} throughput on {where} is an estimate; measure it ({how}) before "
                "relying on counts near a step."
            )
        elif prof.basis == "measured" and prof.source in catalog.sources:
            where = catalog.sources[prof.source].title.split(":")[0]
            notes.append(f"{label} throughput for {inp.gpu} replaced by a measurement ({where}).")
        elif prof.basis == "measured":
            notes.append(f"{label} throughput given as an input (measured).")
    if built.workload.billed_minutes_per_task * 60 > inp.avg_minutes * 60 + 1e-9:
        notes.append(
            "Transcribe bills each request at least "
            f"{catalog.managed.transcribe.minimum_billed_seconds:g} s; this workload's tasks "
            "are shorter, so managed minutes exceed audio minutes."
        )
    notes.append(
        "Managed cost assumes every task is the average length; Transcribe tiers apply to "
        "the whole account's monthly minutes."
    )
    if inp.sizing == "queueing":
        notes.append(
            "Pools sized with M/G/c (Erlang C, Allen–Cunneen) so that the predicted p95 "
            f"upload-to-result time at the peak hour is within {inp.p95_minutes:g} min."
        )
    else:
        notes.append(
            f"Pools sized from average throughput at {inp.target_utilization:g} utilisation; "
            "the waits shown are what that size gives."
        )
    if inp.spot_share > 0:
        notes.append(
            f"Spot: {inp.spot_share:.0%} of GPU instance-hours at the spot price plus "
            f"{inp.spot_interruption_overhead:.0%} re-run time. The 40-60% saving often quoted "
            "holds for an all-spot fleet; a mix saves that share of it."
        )
    if not inp.always_on:
        notes.append(
            f"GPUs billed only for the {cm.gpu_hours:g} active hours; expect cold starts "
            "outside them. Savings Plans do not apply to part-time use."
        )

    savings = mg_total - sh_total
    verdict = _verdict(v, sh_total, mg_total, base.id, cheapest, baselines)
    return PlanResult(
        preset=preset,
        inputs=inp,
        gpu=built.r.gpu,
        stt=SttInfo(model=inp.stt_model, **built.r.stt.model_dump()),
        llm=LlmInfo(model=inp.llm_model, **built.r.llm.model_dump()),
        bedrock_model=inp.bedrock_model,
        workload=built.workload,
        sizing=sizing,
        self_hosted=self_hosted,
        managed=managed,
        savings_monthly_usd=savings,
        savings_pct=(savings / mg_total * 100.0) if mg_total > 0 else 0.0,
        cheaper="self_hosted" if sh_total <= mg_total else "managed",
        crossover=crossover,
        baselines=baselines,
        cheapest_managed=cheapest.id,
        verdict=verdict,
        band=band,
        curve=curve,
        replica_advice=advice,
        catalog_as_of=catalog.as_of,
        warnings=warnings,
        sources=sources,
        notes=notes,
        work_units=meter.used,
    )


def _cost_or_inf(cm: CostModel, v: int) -> float:
    try:
        return cm.self_hosted(v)
    except PoolTooLarge:
        return math.inf


def _finite(xs: list[float]) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in xs]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _verdict(
    v: int,
    sh: float,
    mg: float,
    chosen_id: str,
    cheapest: ManagedBaseline,
    baselines: list[ManagedBaseline],
) -> str:
    chosen = next(b for b in baselines if b.id == chosen_id)
    head = (
        f"At {v:,} tasks/month self-hosting costs ${sh:,.2f}/month; {chosen.name} costs "
        f"${mg:,.2f}: {'self-hosting' if sh <= mg else 'managed'} is cheaper."
    )
    if cheapest.id == chosen_id:
        return head + " That is also the cheapest managed option."
    if cheapest.monthly_usd < sh:
        return (
            head + f" The cheapest managed option, {cheapest.name} at "
            f"${cheapest.monthly_usd:,.2f}, is cheaper than self-hosting."
        )
    return (
        head + f" Even the cheapest managed option, {cheapest.name} at "
        f"${cheapest.monthly_usd:,.2f}, costs more than self-hosting."
    )
