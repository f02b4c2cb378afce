"""Monthly cost as a function of task volume: self-hosted pools and managed baselines.

:class:`CostModel` holds everything about a workload except its volume ``V``, so the
crossover search and the cost curve can ask for ``self_hosted(V)`` and
``managed(V)`` at any volume. Pool sizes come from :mod:`app.planner.sizing` (the
cheapest counts that meet the target). Formulas are written out in docs/planner.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from app.planner.schemas import LineItem, Option, SizingMethod
from app.planner.sizing import (
    PoolResult,
    PoolSpec,
    PoolTooLarge,
    pool_results,
    predicted_p95_s,
    size_queueing,
    size_throughput,
)

__all__ = [
    "Baseline",
    "CostModel",
    "PoolResult",
    "PoolSpec",
    "PoolTooLarge",
    "SupportFee",
    "billed_seconds_per_request",
    "tiered_usd",
    "transcribe_tier_items",
    "transcribe_usd",
]

Tiers = list[tuple[float | None, float]]


def tiered_usd(quantity: float, tiers: Tiers) -> float:
    """Price of ``quantity`` under cumulative tiers ``(upper bound, rate)``; the last
    bound is None. Continuous and increasing in ``quantity`` (the crossover relies on it)."""
    if quantity <= 0:
        return 0.0
    total = 0.0
    lower = 0.0
    for upper, rate in tiers:
        top = quantity if upper is None else min(quantity, upper)
        if top > lower:
            total += (top - lower) * rate
        if upper is None or quantity <= upper:
            break
        lower = upper
    return total


def transcribe_usd(minutes: float, tiers: Tiers) -> float:
    """Tiered price of ``minutes`` billed in one month."""
    return tiered_usd(minutes, tiers)


def transcribe_tier_items(
    minutes: float, tiers: Tiers, source: str | None = None
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
class SupportFee:
    """An AWS support plan: the greater of a minimum and tiered shares of AWS usage."""

    name: str
    minimum_usd: float
    tiers: tuple[tuple[float | None, float], ...]
    source: str

    def usd(self, aws_usage_usd: float) -> float:
        return max(self.minimum_usd, tiered_usd(aws_usage_usd, list(self.tiers)))


# ------------------------------------------------------------------------ self-hosted


@dataclass
class CostModel:
    """Both monthly costs as functions of task volume, everything else held fixed."""

    pools: tuple[PoolSpec, ...]
    method: SizingMethod
    p95_target_s: float
    delay_s: float  # scale-up / spot allowance added to every task's p95 (stated assumption)
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
    fixed_monthly_usd: float  # self-hosted-only AWS fixed costs
    shared_monthly_usd: float  # costs both sides pay
    per_node_monthly_usd: float
    ops_monthly_usd: float = 0.0
    support: SupportFee | None = None
    _cache: dict[tuple[Option, int], tuple[dict[str, PoolResult], float]] = field(
        default_factory=dict, repr=False
    )

    # --- sizing
    def specs(self, option: Option) -> list[PoolSpec]:
        if option == "dedicated":
            return list(self.pools)
        eff = self.packing_efficiency
        return [p.slowed(eff) if p.name in ("stt", "llm") else p for p in self.pools]

    def stage_service_p95(self, pools: list[PoolSpec]) -> float:
        total = 0.0
        for stage in (1, 2):
            total += max((p.service_p95_s for p in pools if p.stage == stage), default=0.0)
        return total

    def size(self, option: Option, volume: int) -> dict[str, PoolResult]:
        """Pool sizes at ``volume`` tasks/month. Packed: ``stt`` and ``llm`` hold the
        same GPUs, reported under both names."""
        return self._sized(option, volume)[0]

    def _sized(self, option: Option, volume: int) -> tuple[dict[str, PoolResult], float]:
        key = (option, volume)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        lam = volume * self.arrivals_per_task
        specs = self.specs(option)
        if self.method == "throughput":
            counts = size_throughput(specs, lam, option)
        else:
            budget = self.p95_target_s - self.delay_s
            counts = size_queueing(
                specs,
                lam,
                budget,
                self.max_utilization,
                option,
                lambda c: self.price(option, c),
            ).counts
        out = pool_results(specs, lam, counts)
        cost = self.price(option, counts)[0]
        if len(self._cache) < 50_000:
            self._cache[key] = (out, cost)
        return out, cost

    def predicted_p95_s(self, sized: dict[str, PoolResult]) -> float:
        return predicted_p95_s(sized) + self.delay_s

    def spares(self) -> int:
        return 1 if self.ha else 0

    def _gpus(self, option: Option, counts: dict[str, int]) -> tuple[int, int, int, int]:
        """(STT GPUs, LLM GPUs, GPU-diarizer GPUs, CPU nodes), spares included."""
        sp = self.spares()
        stt = counts["stt"] + sp
        llm = counts["llm"] + sp if option == "dedicated" else stt
        diar = next((p for p in self.pools if p.name == "diarizer"), None)
        d = counts.get("diarizer", 0) + sp if diar is not None else 0
        on_gpu = diar is not None and diar.on_gpu
        return stt, llm, d if on_gpu else 0, 0 if on_gpu else d

    def price(self, option: Option, counts: dict[str, int]) -> tuple[float, int]:
        """(monthly USD, GPUs) of a fleet with ``counts`` per pool: the search's objective."""
        stt, llm, diar, cpu = self._gpus(option, counts)
        total = (stt + llm if option == "dedicated" else stt) + diar
        od, sp = self.gpu_usd(total)
        aws = (
            od
            + sp
            + cpu * self.cpu_node_usd_per_hour * self.cpu_node_hours
            + self.per_node_monthly_usd * self.instances(total)
            + self.fixed_monthly_usd
            + self.shared_monthly_usd
        )
        return aws + self.support_usd(aws) + self.ops_monthly_usd, total

    def support_usd(self, aws_usage_usd: float) -> float:
        return self.support.usd(aws_usage_usd) if self.support is not None else 0.0

    def gpu_counts(self, option: Option, sized: dict[str, PoolResult]) -> tuple[int, int, int]:
        """(GPUs for STT, GPUs for the LLM, GPUs for a GPU diarizer), spares included."""
        stt, llm, diar, _ = self._gpus(option, {k: r.gpus for k, r in sized.items()})
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
    """One managed pipeline's monthly cost as a function of volume.

    ``turnaround_h``: the longest a task may take by the provider's own terms (24 h for
    Bedrock batch), or None for a synchronous API. A baseline is like-for-like only when
    that fits the plan's p95 target (:attr:`comparable`).
    """

    id: str
    name: str
    stt_api: str
    bedrock_mode: str
    cost: Callable[[int], float]
    items: Callable[[int], list[LineItem]]
    notes: tuple[str, ...] = ()
    turnaround_h: float | None = None
    comparable: bool = True
