"""Workload in, pool sizes, predicted waits and monthly costs out: :func:`plan`.

Pure functions over a :class:`Catalog`; every formula is written out in
``docs/planner.md`` with a worked example. The work of one plan is bounded: sizing is
a search over short wait curves per pool, the crossover search refines only where a
cost step meets a managed line, and a :class:`~app.planner.queueing.WorkMeter`
enforces the total.
"""

from __future__ import annotations

import datetime as dt
import math

from app.planner import report
from app.planner.advice import replica_advice
from app.planner.breakdown import option_cost, pool_models, self_hosted_items
from app.planner.build import FAVOURABLE, UNFAVOURABLE, Built, build, chosen_id
from app.planner.catalog import Catalog
from app.planner.crossover import (
    Span,
    Staircase,
    cheaper_ranges,
    cheapest_segments,
    cost_curve,
    crossover_from,
    curve_volumes,
    sizable,
    stays_cheaper_from,
)
from app.planner.queueing import WorkMeter, reset_meter, use_meter
from app.planner.schemas import (
    Band,
    CostBreakdown,
    Crossover,
    LlmInfo,
    ManagedBaseline,
    OptionCost,
    PlanInput,
    PlanResult,
    Sizing,
    SttInfo,
)

STALE_AFTER_DAYS = report.STALE_AFTER_DAYS
CHEAPEST = "the cheapest like-for-like managed option"


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


class Comparison:
    """Baselines against one scenario's self-hosted staircase. ``full``: every cheaper
    range per baseline (the plan itself); otherwise only where self-hosting stays
    cheaper (the band's corners, which need nothing more)."""

    def __init__(self, built: Built, full: bool) -> None:
        self.built = built
        self.s = Staircase(built.cm)
        self.like = [b for b in built.baselines if b.comparable]
        self.spans: dict[str, tuple[list[Span], list[Span]]] = {}
        if full:
            for b in built.baselines:
                self.spans[b.id] = cheaper_ranges(self.s, b.cost)
            self.stays = {k: _stays_from(v[0], self.s.end) for k, v in self.spans.items()}
        else:
            self.stays = {b.id: stays_cheaper_from(self.s, b.cost) for b in built.baselines}
        self.stays_cheapest = stays_cheaper_from(self.s, self.envelope)

    def cheapest(self, v: int) -> tuple[float, str]:
        return min((b.cost(v), b.id) for b in self.like)

    def envelope(self, v: int) -> float:
        return self.cheapest(v)[0]

    def crossover(self, baseline_id: str) -> Crossover:
        b = next(x for x in self.built.baselines if x.id == baseline_id)
        spans, undecided = self.spans[b.id]
        return crossover_from(spans, self.s, b.cost, b.name, undecided)

    def crossover_cheapest(self) -> Crossover:
        spans, undecided = cheaper_ranges(self.s, self.envelope)
        return crossover_from(spans, self.s, self.envelope, CHEAPEST, undecided)


def _stays_from(spans: list[Span], end: int) -> int | None:
    return spans[-1][0] if spans and spans[-1][1] >= end else None


def _plan(
    inp: PlanInput, catalog: Catalog, preset: str | None, today: dt.date, meter: WorkMeter
) -> PlanResult:
    built = build(inp, catalog)
    cm = built.cm
    v = inp.tasks_per_month

    dedicated = (
        option_cost(built, "dedicated", v)
        if "dedicated" in cm.options
        else OptionCost(option="dedicated", available=False, reason="packing: packed was requested")
    )
    if "packed" in cm.options:
        packed = option_cost(built, "packed", v)
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
    pools = pool_models(built, inp, chosen, sized)
    predicted = cm.predicted_p95_s(sized)
    lam = v * cm.arrivals_per_task
    stt_spec = next(p for p in cm.pools if p.name == "stt")
    llm_spec = next(p for p in cm.pools if p.name == "llm")
    stt_exact = stt_spec.gpu_load(lam)
    llm_exact = llm_spec.gpu_load(lam)
    if inp.sizing == "throughput":
        stt_exact /= inp.target_utilization
        llm_exact /= inp.target_utilization
    combined = None
    if chosen == "packed":
        combined = sum(sized[k].spec.gpu_load(lam) for k in ("stt", "llm")) / sized["stt"].gpus
    target_s = inp.p95_minutes * 60.0
    sizing = Sizing(
        method=inp.sizing,
        p95_target_s=target_s if inp.sizing == "queueing" else None,
        predicted_p95_s=predicted if math.isfinite(predicted) else None,
        meets_target=predicted <= target_s + 1e-6,
        delay_allowance_s=cm.delay_s,
        combined_utilization=combined,
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

    sh_items = self_hosted_items(built, inp, catalog, chosen_oc, sized)
    sh_total = sum(i.monthly_usd for i in sh_items)
    self_hosted = CostBreakdown(
        line_items=sh_items, monthly_usd=sh_total, per_task_usd=sh_total / v
    )

    # ---- every baseline, like-for-like or not, with its exact cheaper ranges
    main = Comparison(built, full=True)
    corners = [Comparison(build(inp, catalog, sc), full=False) for sc in (FAVOURABLE, UNFAVOURABLE)]
    cid = chosen_id(inp)
    base = next(b for b in built.baselines if b.id == cid)
    mg_items = base.items(v)
    mg_total = sum(i.monthly_usd for i in mg_items)
    managed = CostBreakdown(line_items=mg_items, monthly_usd=mg_total, per_task_usd=mg_total / v)

    baselines: list[ManagedBaseline] = []
    for b in built.baselines:
        cost = b.cost(v)
        lo, hi = (c.stays[b.id] for c in corners)
        baselines.append(
            ManagedBaseline(
                id=b.id,
                name=b.name,
                stt_api=b.stt_api,
                bedrock_mode=b.bedrock_mode,  # type: ignore[arg-type]
                monthly_usd=cost,
                per_task_usd=cost / v,
                cheaper="self_hosted" if sh_total <= cost else "managed",
                crossover=main.crossover(b.id),
                comparable=b.comparable,
                turnaround_h=b.turnaround_h,
                band_low=lo,
                band_high=hi,
                notes=list(b.notes),
            )
        )
    by_id = {b.id: b for b in baselines}
    like = [b for b in baselines if b.comparable]
    cheapest = min(like, key=lambda b: (b.monthly_usd, b.id))
    waiting = [b for b in baselines if not b.comparable]
    cheapest_wait = min(waiting, key=lambda b: (b.monthly_usd, b.id)) if waiting else None
    crossover = by_id[cid].crossover
    crossover_cheapest = main.crossover_cheapest()
    segments = cheapest_segments(
        main.s.end, {b.id: b.cost for b in built.baselines if b.comparable}
    )

    vols = curve_volumes(
        v,
        [
            crossover.tasks_per_month,
            crossover_cheapest.tasks_per_month,
            crossover_cheapest.first_cheaper,
        ],
        inp.curve_points,
    )
    curve = cost_curve(main.s, base.cost, main.cheapest, vols)
    vols = curve.tasks_per_month

    # ---- sensitivity band: both corners against every baseline
    lines = []
    for c in corners:
        ok = sizable(c.s, vols)
        lines.append([round(c.s(x), 2) for x in ok] + [math.inf] * (len(vols) - len(ok)))
    band = Band(
        assumptions=[
            "favourable: throughput x1.5, peak factor x0.75 (at least 1), GPU prices x0.9, "
            "managed prices x1.1",
            "unfavourable: throughput x0.5, peak factor x1.5 (at most 24 and the active "
            "hours), GPU prices x1.1, managed prices x0.9",
        ],
        crossover_low=by_id[cid].band_low,
        crossover_high=by_id[cid].band_high,
        cheapest_low=corners[0].stays_cheapest,
        cheapest_high=corners[1].stays_cheapest,
        self_hosted_low_usd=_finite([min(a, b) for a, b in zip(*lines, strict=True)]),
        self_hosted_high_usd=_finite([max(a, b) for a, b in zip(*lines, strict=True)]),
        monthly_usd_low=_finite_or_none(min(c.s(v) for c in corners)),
        monthly_usd_high=_finite_or_none(max(c.s(v) for c in corners)),
    )

    advice = replica_advice(cm, inp, chosen, built.r.gpu.name)

    # ---- sources, warnings, notes
    used = report.used_sources(built, inp, catalog, sh_items + mg_items)
    sources = {sid: catalog.sources[sid] for sid in sorted(used)}
    stale = report.stale_sources(catalog, used, today)
    warnings = report.warnings(built, inp, catalog, sizing, stale, today)
    notes = report.notes(built, inp, catalog)

    savings = mg_total - sh_total
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
        crossover_cheapest=crossover_cheapest,
        baselines=baselines,
        cheapest_managed=cheapest.id,
        cheapest_if_you_can_wait=cheapest_wait.id if cheapest_wait else None,
        cheapest_by_volume=segments,
        verdict=report.verdict(v, sh_total, by_id[cid], cheapest, cheapest_wait),
        band=band,
        curve=curve,
        replica_advice=advice,
        catalog_as_of=catalog.as_of,
        stale_sources=stale,
        warnings=warnings,
        sources=sources,
        notes=notes,
        work_units=meter.used,
    )


def _finite(xs: list[float]) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in xs]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
