"""Where self-hosting becomes cheaper, with a bounded number of cost evaluations.

``self_hosted(V)`` is a step function of the monthly volume ``V`` (it changes where a
pool gains a GPU); ``managed(V)`` increases. The crossover is the smallest integer ``V``
with ``self_hosted(V) <= managed(V)``.

The search evaluates both costs on a fixed geometric grid (four points per doubling,
1 to 10^9: 121 volumes, shared by every baseline through the cost model's cache), takes
the first grid volume where self-hosting is cheaper and bisects between it and the
grid volume before (at most 30 more evaluations; exact below 100,000 tasks/month, to
0.01 % above). So every search costs at most ~150 evaluations whatever the input.
What it can miss: a window of cheaper self-hosting narrower than a quarter-octave
that closes again before the next grid point (just below a GPU step). docs/planner.md
says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from app.planner.costs import CostModel, PoolTooLarge
from app.planner.schemas import MAX_TASKS_PER_MONTH, Crossover, Curve

POINTS_PER_DOUBLING = 4


def grid(v_max: int = MAX_TASKS_PER_MONTH) -> list[int]:
    vols: list[int] = []
    i = 0
    while True:
        v = round(2 ** (i / POINTS_PER_DOUBLING))
        if v > v_max:
            break
        if not vols or v != vols[-1]:
            vols.append(v)
        i += 1
    if vols[-1] != v_max:
        vols.append(v_max)
    return vols


GRID = grid()


EXACT_BELOW = 100_000
RELATIVE_PRECISION = 1e-4


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest v in [lo, hi] with pred(v), assuming pred(hi) and monotone on [lo, hi].

    Exact below :data:`EXACT_BELOW`; above it the bisection stops once the bracket is
    within :data:`RELATIVE_PRECISION` of its volume and returns its upper end (where
    self-hosting is already cheaper), which saves half the evaluations at large volumes.
    """
    while lo < hi:
        if lo >= EXACT_BELOW and hi - lo <= lo * RELATIVE_PRECISION:
            return hi
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def find_crossover(
    cm: CostModel, managed: Callable[[int], float], label: str = "managed"
) -> Crossover:
    def cheaper(v: int) -> bool:
        return cm.self_hosted(v) <= managed(v)

    if cheaper(1):
        return Crossover(
            status="always_cheaper",
            tasks_per_month=1,
            self_hosted_usd=cm.self_hosted(1),
            managed_usd=managed(1),
            message=f"Self-hosting is cheaper than {label} from the first task.",
        )
    prev = 1
    for v in GRID[1:]:
        try:
            is_cheaper = cheaper(v)
        except PoolTooLarge:
            return Crossover(
                status="none",
                tasks_per_month=None,
                message=f"No crossover up to {prev:,} tasks/month, where the planner stops "
                f"(a pool would exceed its GPU limit): {label} stays cheaper.",
            )
        if is_cheaper:
            x = _first_true(cheaper, prev + 1, v)
            sh, mg = cm.self_hosted(x), managed(x)
            return Crossover(
                status="found",
                tasks_per_month=x,
                self_hosted_usd=sh,
                managed_usd=mg,
                message=f"Self-hosting becomes cheaper than {label} at {x:,} tasks/month "
                f"(${sh:,.2f} vs ${mg:,.2f}).",
            )
        prev = v
    return Crossover(
        status="none",
        tasks_per_month=None,
        message=f"No crossover up to {MAX_TASKS_PER_MONTH:,} tasks/month: {label} stays cheaper.",
    )


def curve_volumes(volume: int, crossovers: list[int | None], points: int) -> list[int]:
    """Evenly spaced volumes from 1 to past the workload and the crossovers."""
    found = [c for c in crossovers if c]
    top = max(2 * volume, math.ceil(1.5 * max(found)) if found else 0, 10)
    top = min(top, MAX_TASKS_PER_MONTH)
    vols: set[int] = {max(1, round(top * i / (points - 1))) for i in range(points)}
    vols.add(min(volume, top))
    for c in found:
        if c <= top:
            vols |= {max(1, c - 1), c}
    return sorted(v for v in vols if 1 <= v <= top)


def sizable(cm: CostModel, vols: list[int]) -> list[int]:
    """``vols`` up to the first one the planner cannot size (the pool limit)."""
    out = []
    for v in vols:
        try:
            cm.self_hosted(v)
        except PoolTooLarge:
            break
        out.append(v)
    return out


def cost_curve(
    cm: CostModel,
    managed: Callable[[int], float],
    cheapest: Callable[[int], float],
    vols: list[int],
) -> Curve:
    vols = sizable(cm, vols)
    return Curve(
        tasks_per_month=vols,
        self_hosted_usd=[round(cm.self_hosted(v), 2) for v in vols],
        managed_usd=[round(managed(v), 2) for v in vols],
        cheapest_managed_usd=[round(cheapest(v), 2) for v in vols],
    )
