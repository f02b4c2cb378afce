"""What a plan says about itself: the sources it used and their age, model lifecycle,
warnings, notes and the one-sentence verdict.

Why per source: v2 warned only when the catalog's top-level review date was old, so
fourteen prices last checked in 2025 hid behind a 2026 review. Now every source a plan
uses carries its own date and each one older than six months is named in a warning
(CLI, API and page alike), and a retired or soon-retired managed model is named too.
"""

from __future__ import annotations

import datetime as dt

from app.planner.build import Built, delay_allowance_s
from app.planner.catalog import Catalog, Lifecycle
from app.planner.schemas import LineItem, ManagedBaseline, PlanInput, Sizing

STALE_AFTER_DAYS = 183  # six months


def age_days(as_of: str, today: dt.date) -> int | None:
    try:
        return (today - dt.date.fromisoformat(as_of[:10])).days
    except ValueError:
        return None


def used_sources(built: Built, inp: PlanInput, catalog: Catalog, items: list[LineItem]) -> set[str]:
    """Every source behind a figure this plan shows (all baselines are shown)."""
    r, m = built.r, catalog.managed
    used = {r.gpu.source, r.stt.source, r.llm.source, m.transcribe.source}
    if inp.spot_share > 0:
        used.add(r.gpu.spot_source)
    bm = m.bedrock[inp.bedrock_model]
    used.add(bm.source)
    life = bm.life()
    if life.source:
        used.add(life.source)
    elif life.status != "active":
        used.add("aws-bedrock-lifecycle")
    used |= {api.source for api in m.stt_apis.values()}
    if m.egress is not None and any(api.outside_aws for api in m.stt_apis.values()):
        used.add(m.egress.source)
    if m.bedrock_batch_source:
        used.add(m.bedrock_batch_source)
    used |= {i.source for i in items if i.source}
    if r.diarizer is not None:
        used.add(r.diarizer.source)
    if inp.commitment != "none":
        used.add(catalog.commitments[inp.commitment].source)
    if inp.support_plan != "none" and inp.support_plan in catalog.support_plans:
        used.add(catalog.support_plans[inp.support_plan].source)
    return {s for s in used if s in catalog.sources}


def stale_sources(catalog: Catalog, used: set[str], today: dt.date) -> dict[str, str]:
    out = {}
    for sid in sorted(used):
        src = catalog.sources[sid]
        age = age_days(src.as_of, today)
        if age is None or age > STALE_AFTER_DAYS:
            out[sid] = src.as_of
    return out


def _lifecycle_warning(kind: str, name: str, life: Lifecycle, today: dt.date) -> str | None:
    state, words = life.state(today, STALE_AFTER_DAYS)
    if state == "active":
        return None
    label = {"retired": "is marked retired", "soon": "retires soon", "legacy": "is legacy"}
    return f"{kind} '{name}' {label[state]}: it {words}. {life.note}".strip()


def warnings(
    built: Built,
    inp: PlanInput,
    catalog: Catalog,
    sizing: Sizing,
    stale: dict[str, str],
    today: dt.date,
) -> list[str]:
    out: list[str] = []
    if stale:
        listed = ", ".join(f"{sid} ({d})" for sid, d in stale.items())
        out.append(
            f"{len(stale)} price or throughput source(s) used here were last checked more "
            f"than six months ago: {listed}. Check them, or pass your own with --catalog."
        )
    age = age_days(catalog.as_of, today)
    if age is None or age > STALE_AFTER_DAYS:
        out.append(
            f"The price catalog was last reviewed on {catalog.as_of}, more than six months "
            "ago: prices may have changed. Update catalog.yaml or pass --catalog."
        )
    bm = catalog.managed.bedrock[inp.bedrock_model]
    w = _lifecycle_warning("Bedrock model", inp.bedrock_model, bm.life(), today)
    if w:
        out.append(w)
    api = catalog.managed.stt_apis.get(inp.managed_stt)
    if api is not None and api.lifecycle is not None:
        w = _lifecycle_warning("Speech API", inp.managed_stt, api.lifecycle, today)
        if w:
            out.append(w)
    cm = built.cm
    if inp.sizing == "queueing" and not sizing.meets_target:
        out.append(
            f"The p95 target of {inp.p95_minutes:g} min cannot be met: service time alone "
            f"takes {cm.stage_service_p95(list(cm.pools)) / 60:.1f} min at p95 on {inp.gpu}"
            + (f" (plus {cm.delay_s / 60:g} min scale-up allowance)" if cm.delay_s else "")
            + ". Pools are sized so that waiting adds almost nothing."
        )
    if (
        inp.bedrock_batch
        and inp.p95_minutes * 60 < catalog.managed.bedrock_batch_turnaround_hours * 3600
    ):
        out.append(
            "The chosen baseline uses Bedrock batch, which may take up to "
            f"{catalog.managed.bedrock_batch_turnaround_hours:g} h, while self-hosting is "
            f"sized to a {inp.p95_minutes:g}-minute p95: not like-for-like. The headline "
            "crossover compares like-for-like options only."
        )
    return out


def notes(built: Built, inp: PlanInput, catalog: Catalog) -> list[str]:
    out: list[str] = []
    r, cm = built.r, built.cm
    for label, prof in (("STT", r.stt), ("LLM", r.llm), ("Diarizer", r.diarizer)):
        if prof is None:
            continue
        if prof.basis == "estimate":
            where = "CPU" if label == "Diarizer" and inp.diarizer_device == "cpu" else inp.gpu
            how = (
                "bench/diarization.py, then diarizer_audio_s_per_s"
                if label == "Diarizer"
                else "bench/gpu_smoke.py on the GPU, or `aipp plan --calibrate`"
            )
            out.append(
                f"{label} throughput on {where} is an estimate (source {prof.source}), not a "
                f"measurement; measure it ({how}) before relying on counts near a step."
            )
        elif prof.basis == "measured" and prof.source in catalog.sources:
            where = catalog.sources[prof.source].title.split(":")[0]
            out.append(f"{label} throughput for {inp.gpu} replaced by a measurement ({where}).")
        elif prof.basis == "measured":
            out.append(f"{label} throughput given as an input (measured).")
    if built.workload.billed_minutes_per_task * 60 > inp.avg_minutes * 60 + 1e-9:
        out.append(
            "Transcribe bills each request at least "
            f"{catalog.managed.transcribe.minimum_billed_seconds:g} s; this workload's tasks "
            "are shorter, so managed minutes exceed audio minutes."
        )
    out.append(
        "Managed cost assumes every task is the average length; Transcribe tiers apply to "
        "the whole account's monthly minutes."
    )
    if catalog.managed.egress is not None:
        out.append(
            "Speech APIs outside AWS pay internet egress for the audio "
            f"({catalog.managed.egress.audio_mb_per_minute:g} MB per audio minute assumed)."
        )
    if inp.sizing == "queueing":
        out.append(
            "Pools sized with M/G/c (Erlang C, Allen–Cunneen) for the cheapest fleet whose "
            f"predicted p95 upload-to-result time at the peak hour is within "
            f"{inp.p95_minutes:g} min (service p95 from a gamma law of audio lengths)."
        )
    else:
        out.append(
            f"Pools sized from average throughput at {inp.target_utilization:g} utilisation; "
            "the waits shown are what that size gives."
        )
    delay = delay_allowance_s(inp)
    if delay:
        why = "spot nodes are reclaimed" if inp.spot_share > 0 else "GPUs start cold each day"
        out.append(
            f"Assumed: a task may wait {delay / 60:g} min for a new replica ({why}); the "
            "predicted p95 includes it (--scale-up-delay)."
        )
    if inp.spot_share > 0:
        gpu = r.gpu
        rng = (
            f" (range assumed {gpu.spot_range_usd_per_hour[0]:g}-"
            f"{gpu.spot_range_usd_per_hour[1]:g} $/h)"
            if getattr(gpu, "spot_range_usd_per_hour", None)
            else ""
        )
        out.append(
            f"Spot: {inp.spot_share:.0%} of GPU instance-hours at the spot price, an "
            f"estimate{rng}, plus {inp.spot_interruption_overhead:.0%} re-run time. The "
            "40-60% saving often quoted holds for an all-spot fleet; a mix saves that share "
            "of it."
        )
    if not inp.always_on:
        out.append(
            f"GPUs billed only for the {cm.gpu_hours:g} active hours; expect cold starts "
            "outside them. Savings Plans do not apply to part-time use."
        )
    return out


def verdict(
    v: int,
    sh: float,
    chosen: ManagedBaseline,
    cheapest: ManagedBaseline,
    wait: ManagedBaseline | None,
) -> str:
    mg = chosen.monthly_usd
    head = (
        f"At {v:,} tasks/month self-hosting costs ${sh:,.2f}/month; {chosen.name} costs "
        f"${mg:,.2f}: {'self-hosting' if sh <= mg else 'managed'} is cheaper."
    )
    if cheapest.id == chosen.id:
        head += " That is also the cheapest like-for-like managed option."
    elif cheapest.monthly_usd < sh:
        head += (
            f" The cheapest like-for-like managed option, {cheapest.name} at "
            f"${cheapest.monthly_usd:,.2f}, is cheaper than self-hosting."
        )
    else:
        head += (
            f" Even the cheapest like-for-like managed option, {cheapest.name} at "
            f"${cheapest.monthly_usd:,.2f}, costs more than self-hosting."
        )
    if wait is not None and wait.monthly_usd < min(sh, cheapest.monthly_usd):
        head += (
            f" If you can wait up to {wait.turnaround_h:g} h, {wait.name} costs "
            f"${wait.monthly_usd:,.2f}."
        )
    return head
