"""Pool sizes at one volume: the cheapest GPU counts that meet the p95 target.

Why a search and not a rule: v2 split the wait budget evenly between the stages and
then re-sized each stage greedily. That is not the cheapest plan (seed inputs with
``duration_cv 1``, a 5-minute target and 326,100 tasks got 24 STT + 3 LLM GPUs where
22 + 4 meets the target for less), and it made cost fall as volume rose, which broke
the crossover search. Here the split is searched:

* every pool's p95 wait is a curve over its GPU count (:func:`wait_curve`), from its
  floor (stable, and at most ``max_utilization`` busy) to the first count with no wait;
* dedicated layout: for each LLM count on its curve, stage 1's pools (STT and the
  diarizer, side by side) take the fewest GPUs that fit what the LLM leaves of the
  budget; the cheapest combination wins. More LLM GPUs than the end of its curve cannot
  help, so the search is exact; it stops early once even stage 1's smallest possible
  counts cannot beat the best plan found;
* packed layout: STT and the LLM share ``n`` GPUs (each ``1 / packing_efficiency``
  slower) and ``n`` also keeps their *combined* load within ``max_utilization``; the
  diarizer is sized beside them the same way.

Because the search is exact and a fixed fleet's waits only grow with the arrival rate,
the cheapest plan's cost never falls as volume rises (property-tested).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

from app.planner.queueing import Waits, pool_waits, stable_gpus, wait_curve
from app.planner.schemas import MAX_GPUS_PER_POOL, Option, PlannerInputError


class PoolTooLarge(PlannerInputError):
    """A volume whose pool would exceed MAX_GPUS_PER_POOL (searches stop there)."""


@dataclass(frozen=True)
class PoolSpec:
    """One pool of identical servers. ``service_s`` is per server (a batch slot for an LLM);
    ``service_p95_s`` is one task's p95 time in service (gamma quantile, see stats.py)."""

    name: str  # stt | llm | diarizer
    service_s: float
    slots: int
    cs2: float
    stage: int  # 1: speech (STT and diarizer side by side), 2: summary
    on_gpu: bool
    throughput_util: float  # throughput sizing: plan on this share of capacity
    service_p95_s: float

    def slowed(self, efficiency: float) -> PoolSpec:
        """The same pool sharing its GPU: every time ``1 / efficiency`` longer."""
        return PoolSpec(
            self.name,
            self.service_s / efficiency,
            self.slots,
            self.cs2,
            self.stage,
            self.on_gpu,
            self.throughput_util,
            self.service_p95_s / efficiency,
        )

    def gpu_load(self, lam: float) -> float:
        """Busy GPUs (or nodes) at arrival rate ``lam``: the load at utilisation 1."""
        return lam * self.service_s / self.slots


@dataclass
class PoolResult:
    spec: PoolSpec
    gpus: int
    waits: Waits


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - 1e-9 * max(1.0, x)))


def check_size(spec: PoolSpec, gpus: int) -> None:
    if gpus > MAX_GPUS_PER_POOL:
        raise PoolTooLarge(
            "tasks_per_month",
            f"the {spec.name} pool would need {gpus:,} GPUs or nodes, more than "
            f"the planner's {MAX_GPUS_PER_POOL:,}; plan a smaller share of the work",
        )


class Curve:
    """One pool's p95 wait by GPU count, from ``first`` to the first count with none."""

    def __init__(self, spec: PoolSpec, lam: float, first: int) -> None:
        check_size(spec, first)
        self.spec = spec
        self.first = first
        self.waits = wait_curve(lam, spec.service_s, spec.cs2, spec.slots, first)
        check_size(spec, self.last)
        self._prefix_min = list(accumulate((-w for w in self.waits), max))

    @property
    def last(self) -> int:
        return self.first + len(self.waits) - 1

    def at(self, gpus: int) -> float:
        i = gpus - self.first
        return self.waits[i] if i < len(self.waits) else 0.0

    def fewest(self, budget: float) -> int | None:
        """Fewest GPUs whose p95 wait is within ``budget`` (None: not even with no wait)."""
        if budget < 0:
            return None
        i = bisect.bisect_left(self._prefix_min, -budget)
        return self.first + i if i < len(self.waits) else None


Price = Callable[[dict[str, int]], tuple[float, int]]  # counts -> (USD, GPUs)


def floor_gpus(spec: PoolSpec, lam: float, max_util: float) -> int:
    """Stable and at most ``max_util`` busy."""
    return max(stable_gpus(lam * spec.service_s, spec.slots), _ceil(spec.gpu_load(lam) / max_util))


def packed_floor(stt: PoolSpec, llm: PoolSpec, lam: float, util: float) -> int:
    """Shared GPUs for packed STT + LLM: each stable, and their combined load at most
    ``util`` of the GPUs (and below 1)."""
    combined = stt.gpu_load(lam) + llm.gpu_load(lam)
    return max(
        floor_gpus(stt, lam, 1.0),
        floor_gpus(llm, lam, 1.0),
        math.floor(combined) + 1,
        _ceil(combined / util),
    )


@dataclass(frozen=True)
class Sized:
    counts: dict[str, int]
    meets: bool


def size_queueing(
    specs: list[PoolSpec],
    lam: float,
    budget_s: float,
    max_util: float,
    option: Option,
    price: Price,
) -> Sized:
    """The cheapest counts whose predicted p95 (waits + service, stage by stage) fits
    ``budget_s``; when none does, every pool at its no-wait count (``meets`` False)."""
    by = {p.name: p for p in specs}
    stt, llm, diar = by["stt"], by["llm"], by.get("diarizer")
    d_curve = Curve(diar, lam, floor_gpus(diar, lam, max_util)) if diar else None

    def diar_count(stage1_budget: float) -> int | None:
        if d_curve is None or diar is None:
            return 0
        return d_curve.fewest(stage1_budget - diar.service_p95_s)

    best: tuple[float, int, dict[str, int]] | None = None

    def consider(counts: dict[str, int]) -> None:
        nonlocal best
        usd, gpus = price(counts)
        if best is None or (usd, gpus) < best[:2]:
            best = (usd, gpus, counts)

    if option == "packed":
        first = packed_floor(stt, llm, lam, max_util)
        s_curve, l_curve = Curve(stt, lam, first), Curve(llm, lam, first)
        last = max(s_curve.last, l_curve.last)
        d_min = diar_count(budget_s - llm.service_p95_s)
        for n in range(first, last + 1):
            if best is not None and d_min is not None:
                if price({"stt": n, "llm": n, "diarizer": d_min})[:2] >= best[:2]:
                    break
            stage1 = budget_s - (l_curve.at(n) + llm.service_p95_s)
            if s_curve.at(n) + stt.service_p95_s > stage1:
                continue
            d = diar_count(stage1)
            if d is not None:
                consider({"stt": n, "llm": n, "diarizer": d})
        if best is None:
            d = d_curve.last if d_curve else 0
            return Sized({"stt": last, "llm": last, "diarizer": d}, False)
        return Sized(best[2], True)

    s_curve = Curve(stt, lam, floor_gpus(stt, lam, max_util))
    l_curve = Curve(llm, lam, floor_gpus(llm, lam, max_util))

    def stage1_counts(stage1: float) -> dict[str, int] | None:
        s = s_curve.fewest(stage1 - stt.service_p95_s)
        d = diar_count(stage1)
        return None if s is None or d is None else {"stt": s, "diarizer": d}

    widest = stage1_counts(budget_s - llm.service_p95_s)
    if widest is not None:
        for n in range(l_curve.first, l_curve.last + 1):
            if best is not None and price({**widest, "llm": n})[:2] >= best[:2]:
                break
            c = stage1_counts(budget_s - (l_curve.at(n) + llm.service_p95_s))
            if c is not None:
                consider({**c, "llm": n})
    if best is None:
        d = d_curve.last if d_curve else 0
        return Sized({"stt": s_curve.last, "llm": l_curve.last, "diarizer": d}, False)
    return Sized(best[2], True)


def size_throughput(specs: list[PoolSpec], lam: float, option: Option) -> dict[str, int]:
    """v1's rule: ``ceil(load / target_utilization)`` per pool, at least 1 and stable; in
    the packed layout the shared count covers the combined load the same way."""
    by = {p.name: p for p in specs}
    counts = {
        p.name: max(
            1, _ceil(p.gpu_load(lam) / p.throughput_util), stable_gpus(lam * p.service_s, p.slots)
        )
        for p in specs
    }
    if option == "packed":
        stt, llm = by["stt"], by["llm"]
        n = max(counts["stt"], counts["llm"], packed_floor(stt, llm, lam, stt.throughput_util))
        counts["stt"] = counts["llm"] = n
    counts.setdefault("diarizer", 0)
    for p in specs:
        check_size(p, counts[p.name])
    return counts


def pool_results(
    specs: list[PoolSpec], lam: float, counts: dict[str, int]
) -> dict[str, PoolResult]:
    return {
        p.name: PoolResult(
            p, counts[p.name], pool_waits(counts[p.name], p.slots, lam, p.service_s, p.cs2)
        )
        for p in specs
    }


def predicted_p95_s(sized: dict[str, PoolResult]) -> float:
    """Sum over the two stages of the slowest pool's p95 wait plus p95 service."""
    total = 0.0
    for stage in (1, 2):
        rs = [r for r in sized.values() if r.spec.stage == stage]
        if rs:
            total += max(r.waits.p95_wait_s + r.spec.service_p95_s for r in rs)
    return total
