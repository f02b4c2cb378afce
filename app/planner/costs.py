"""Monthly cost as a function of task volume: self-hosted pools and managed baselines.

:class:`CostModel` holds everything about a workload except its volume ``V``, so the
crossover search and the cost curve can ask for ``self_hosted(V)`` and
``managed(V)`` at any volume. Formulas are written out in docs/planner.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from app.planner.queueing import Waits, min_servers_for_wait, pool_waits
from app.planner.schemas import (
    MAX_GPUS_PER_POOL,
    LineItem,
    Option,
    PlannerInputError,
    SizingMethod,
)

Z95 = 1.645  # normal quantile for the p95 of a stage's service time


class PoolTooLarge(PlannerInputError):
    """A volume whose pool would exceed MAX_GPUS_PER_POOL (searches stop there)."""


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


# ------------------------------------------------------------------------ self-hosted


@dataclass(frozen=True)
class PoolSpec:
    """One pool of identical servers. ``service_s`` is per server (a batch slot for an LLM)."""

    name: str  # stt | llm | diarizer
    service_s: float
    slots: int
    cs2: float
    stage: int  # 1: speech (STT and diarizer side by side), 2: summary
    on_gpu: bool
    throughput_util: float  # throughput sizing: plan on this share of capacity

    def service_p95_s(self, cv: float) -> float:
        return self.service_s * (1.0 + Z95 * cv)


@dataclass
class PoolResult:
    spec: PoolSpec
    gpus: int
    waits: Waits


@dataclass
class CostModel:
    """Both monthly costs as functions of task volume, everything else held fixed."""

    pools: tuple[PoolSpec, ...]
    method: SizingMethod
    p95_target_s: float
    max_utilization: float
    duration_cv: float
    arrivals_per_task: float  # peak tasks/s per monthly task
    options: tuple[Option, ...]
    packing_efficiency: float
    gpus_per_instance: int
    ondemand_usd_per_hour: float
    spot_usd_per_hour: float
    commitment_discount: float
    gpu_hours: float
    spot_share: float
    spot_overhead: float
    ha: bool
    cpu_node_usd_per_hour: float
    cpu_node_hours: float
    fixed_monthly_usd: float  # self-hosted-only fixed costs, ops included
    shared_monthly_usd: float  # costs both sides pay
    per_node_monthly_usd: float
    _cache: dict[tuple[Option, int], tuple[dict[str, PoolResult], float]] = field(
        default_factory=dict, repr=False
    )

    # --- sizing
    def stage_service_p95(self, pools: list[PoolSpec]) -> float:
        total = 0.0
        for stage in (1, 2):
            ps = [p.service_p95_s(self.duration_cv) for p in pools if p.stage == stage]
            total += max(ps, default=0.0)
        return total

    def _size_throughput(self, spec: PoolSpec, lam: float) -> PoolResult:
        exact = lam * spec.service_s / spec.slots / spec.throughput_util
        gpus = max(1, math.ceil(exact - 1e-9 * max(1.0, exact)))
        return PoolResult(spec, gpus, pool_waits(gpus, spec.slots, lam, spec.service_s, spec.cs2))

    def _size_queueing(self, specs: list[PoolSpec], lam: float) -> dict[str, PoolResult]:
        """Split the wait budget evenly by stage, then re-size each stage (the summary
        stage first) with what the others actually use; stage 1's pools run side by
        side. Each step keeps the sum of the stages' p95 waits within the budget."""
        budget = max(0.0, self.p95_target_s - self.stage_service_p95(specs))
        stages = sorted({p.stage for p in specs})
        out: dict[str, PoolResult] = {}

        def size_stage(st: int, share: float) -> None:
            for spec in specs:
                if spec.stage == st:
                    floor = math.ceil(lam * spec.service_s / (spec.slots * self.max_utilization))
                    gpus, w = min_servers_for_wait(
                        lam, spec.service_s, spec.cs2, spec.slots, share, max(1, floor)
                    )
                    out[spec.name] = PoolResult(spec, gpus, w)

        def used(st: int) -> float:
            return max(out[p.name].waits.p95_wait_s for p in specs if p.stage == st)

        for st in stages:
            size_stage(st, budget / len(stages))
        if len(stages) > 1:
            for st in reversed(stages):
                size_stage(st, budget - sum(used(o) for o in stages if o != st))
        return out

    def _packed_specs(self) -> list[PoolSpec]:
        """STT and LLM on the same GPUs: each runs ``1 / packing_efficiency`` slower (they
        contend for the GPU), and the GPU count also covers their summed load."""
        eff = self.packing_efficiency
        return [
            replace(p, service_s=p.service_s / eff) for p in self.pools if p.name in ("stt", "llm")
        ]

    def size(self, option: Option, volume: int) -> dict[str, PoolResult]:
        """Pool sizes at ``volume`` tasks/month. Packed: ``stt`` and ``llm`` hold the
        same GPUs (the larger of the two counts), reported under both names."""
        return self._sized(option, volume)[0]

    def _sized(self, option: Option, volume: int) -> tuple[dict[str, PoolResult], float]:
        key = (option, volume)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        lam = volume * self.arrivals_per_task
        specs = list(self.pools)
        if option == "packed":
            specs = self._packed_specs() + [p for p in self.pools if p.name == "diarizer"]
        if self.method == "throughput":
            out = {p.name: self._size_throughput(p, lam) for p in specs}
        else:
            out = self._size_queueing(specs, lam)
        if option == "packed":
            load = sum(lam * out[k].spec.service_s / out[k].spec.slots for k in ("stt", "llm"))
            n = max(out["stt"].gpus, out["llm"].gpus, math.floor(load) + 1)
            for name in ("stt", "llm"):
                r = out[name]
                w = pool_waits(n, r.spec.slots, lam, r.spec.service_s, r.spec.cs2)
                out[name] = PoolResult(r.spec, n, w)
        for r in out.values():
            if r.gpus > MAX_GPUS_PER_POOL:
                raise PoolTooLarge(
                    "tasks_per_month",
                    f"the {r.spec.name} pool would need {r.gpus:,} GPUs or nodes, more than "
                    f"the planner's {MAX_GPUS_PER_POOL:,}; plan a smaller share of the work",
                )
        cost = self._cost_of(option, out)
        if len(self._cache) < 20_000:
            self._cache[key] = (out, cost)
        return out, cost

    def predicted_p95_s(self, sized: dict[str, PoolResult]) -> float:
        total = 0.0
        for stage in (1, 2):
            rs = [r for r in sized.values() if r.spec.stage == stage]
            if rs:
                total += max(
                    r.waits.p95_wait_s + r.spec.service_p95_s(self.duration_cv) for r in rs
                )
        return total

    def spares(self) -> int:
        return 1 if self.ha else 0

    def gpu_counts(self, option: Option, sized: dict[str, PoolResult]) -> tuple[int, int, int]:
        """(GPUs for STT, GPUs for the LLM, GPUs for a GPU diarizer), spares included."""
        sp = self.spares()
        stt = sized["stt"].gpus + sp
        llm = sized["llm"].gpus + sp if option == "dedicated" else stt
        diar = (
            sized["diarizer"].gpus + sp
            if "diarizer" in sized and sized["diarizer"].spec.on_gpu
            else 0
        )
        return stt, llm, diar

    def total_gpus(self, option: Option, sized: dict[str, PoolResult]) -> int:
        stt, llm, diar = self.gpu_counts(option, sized)
        return (stt + llm if option == "dedicated" else stt) + diar

    def cpu_nodes(self, sized: dict[str, PoolResult]) -> int:
        d = sized.get("diarizer")
        return d.gpus + self.spares() if d is not None and not d.spec.on_gpu else 0

    def instances(self, total_gpus: int) -> int:
        return math.ceil(total_gpus / self.gpus_per_instance)

    def gpu_usd(self, total_gpus: int) -> tuple[float, float]:
        """(on-demand, spot) GPU instance cost: the spot share is a share of instance-hours,
        so half of one instance on spot is half its hours at the spot price."""
        inst_hours = self.instances(total_gpus) * self.gpu_hours
        od_rate = self.ondemand_usd_per_hour * (1 - self.commitment_discount)
        od = inst_hours * (1 - self.spot_share) * od_rate
        sp = inst_hours * self.spot_share * (1 + self.spot_overhead) * self.spot_usd_per_hour
        return od, sp

    def _cost_of(self, option: Option, sized: dict[str, PoolResult]) -> float:
        total = self.total_gpus(option, sized)
        od, sp = self.gpu_usd(total)
        cpu = self.cpu_nodes(sized) * self.cpu_node_usd_per_hour * self.cpu_node_hours
        return (
            od
            + sp
            + cpu
            + self.fixed_monthly_usd
            + self.shared_monthly_usd
            + self.per_node_monthly_usd * self.instances(total)
        )

    def option_usd(self, option: Option, volume: int) -> float:
        return self._sized(option, volume)[1]

    def best_option(self, volume: int) -> Option:
        """The cheapest layout; on a tie the one with fewer GPUs, then dedicated."""
        return min(
            self.options,
            key=lambda o: (
                self.option_usd(o, volume),
                self.total_gpus(o, self.size(o, volume)),
                o != "dedicated",
            ),
        )

    def self_hosted(self, volume: int) -> float:
        return min(self.option_usd(o, volume) for o in self.options)


# --------------------------------------------------------------------------- managed


@dataclass(frozen=True)
class Baseline:
    """One managed pipeline's monthly cost as a function of volume."""

    id: str
    name: str
    stt_api: str
    bedrock_mode: str
    cost: Callable[[int], float]
    items: Callable[[int], list[LineItem]]
    notes: tuple[str, ...] = ()
