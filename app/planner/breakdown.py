"""The chosen fleet in detail: each option's GPU counts, each pool's queueing figures and
the self-hosted line items, from a :class:`~app.planner.build.Built` cost model.
"""

from __future__ import annotations

from app.planner.build import Built, fixed_costs
from app.planner.catalog import Catalog
from app.planner.costs import PoolResult
from app.planner.schemas import LineItem, Option, OptionCost, PlanInput, PoolSizing


def option_cost(built: Built, option: Option, v: int) -> OptionCost:
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


def pool_models(
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
                service_p95_s=spec.service_p95_s,
                basis=basis,
                usd_per_audio_hour=per_audio_hour,
            )
        )
    return out


def self_hosted_items(
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
    for name, q, unit, uu, m, src, per_node in fixed_costs(catalog, inp, "self_hosted"):
        if per_node:
            q, m = q * inst, m * inst
        items.append(
            LineItem(name=name, quantity=q, unit=unit, unit_usd=uu, monthly_usd=m, source=src)
        )
    for name, q, unit, uu, m, src, _ in fixed_costs(catalog, inp, "both"):
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
    if cm.support is not None:
        fee = cm.support_usd(sum(i.monthly_usd for i in items))
        items.append(
            LineItem(
                name=f"{cm.support.name} (share of this side's AWS usage)",
                quantity=1,
                unit="month",
                unit_usd=fee,
                monthly_usd=fee,
                source=cm.support.source,
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
