"""Where self-hosting becomes cheaper: a numeric search over two step-shaped cost curves.

``self_hosted(V)`` is a non-decreasing step function of the monthly task volume ``V``
(it only changes where a GPU pool gains a GPU); ``managed(V)`` is increasing and
concave (tiered Transcribe minutes plus linear Bedrock tokens). The crossover is the
smallest integer ``V`` with ``self_hosted(V) <= managed(V)``.

The search never walks every volume:

1. A continuous relaxation of the self-hosted cost (no ``ceil``, the cheapest GPU-hour)
   is convex and below the real cost; minus the concave managed cost it stays convex,
   so the volumes where it is <= managed form one interval per layout, found by a
   ternary search plus two bisections. Below that interval there is no crossover.
2. From the interval's start, walk the self-hosted steps. On a step the self-hosted
   cost is a constant ``C`` and the managed cost increases, so the first volume with
   ``managed(V) >= C`` is a bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from app.planner.model import MAX_TASKS_PER_MONTH, CostModel, Crossover, Curve, Option

SEGMENT_LIMIT = 50_000
CURVE_BREAKPOINTS = 200


def _argmin_convex(f: Callable[[int], float], lo: int, hi: int) -> int:
    while hi - lo > 2:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        if f(m1) <= f(m2):
            hi = m2
        else:
            lo = m1
    return min(range(lo, hi + 1), key=f)


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest v in [lo, hi] with pred(v), pred monotone False..True and pred(hi) True."""
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def bound_window(cm: CostModel, option: Option, v_max: int) -> tuple[int, int] | None:
    """Volumes where the relaxed self-hosted cost of ``option`` is <= the managed cost."""

    def g(v: int) -> float:
        return cm.lower_bound(option, v) - cm.managed(v)

    m = _argmin_convex(g, 1, v_max)
    if g(m) > 0:
        return None
    start = _first_true(lambda v: g(v) <= 0, 1, m)
    # last v in [m, v_max] with g <= 0: g is non-decreasing there
    if g(v_max) <= 0:
        end = v_max
    else:
        end = _first_true(lambda v: g(v) > 0, m, v_max) - 1
    return start, end


def _found(cm: CostModel, v: int) -> Crossover:
    sh, mg = cm.self_hosted(v), cm.managed(v)
    return Crossover(
        status="found",
        tasks_per_month=v,
        self_hosted_usd=sh,
        managed_usd=mg,
        message=f"Self-hosting becomes cheaper at {v:,} tasks/month "
        f"(${sh:,.2f} vs ${mg:,.2f} managed).",
    )


def find_crossover(cm: CostModel, v_max: int = MAX_TASKS_PER_MONTH) -> Crossover:
    if cm.self_hosted(1) <= cm.managed(1):
        return Crossover(
            status="always_cheaper",
            tasks_per_month=1,
            self_hosted_usd=cm.self_hosted(1),
            managed_usd=cm.managed(1),
            message="Self-hosting is cheaper from the first task.",
        )
    windows = [w for o in cm.options if (w := bound_window(cm, o, v_max)) is not None]
    if not windows:
        return Crossover(
            status="none",
            tasks_per_month=None,
            message=f"No crossover up to {v_max:,} tasks/month: managed stays cheaper.",
        )
    lo = max(1, min(w[0] for w in windows))
    end = max(w[1] for w in windows)
    segments = 0
    while lo <= end:
        cost = cm.self_hosted(lo)
        hi = min(cm.next_break(lo) - 1, end)
        if cm.managed(hi) >= cost:
            return _found(cm, _first_true(lambda v, c=cost: cm.managed(v) >= c, lo, hi))
        lo = hi + 1
        segments += 1
        if segments > SEGMENT_LIMIT:
            return Crossover(
                status="search_limit",
                tasks_per_month=None,
                message=f"No crossover found in the first {SEGMENT_LIMIT:,} GPU steps after "
                f"{min(w[0] for w in windows):,} tasks/month; the costs run nearly parallel.",
            )
    return Crossover(
        status="none",
        tasks_per_month=None,
        message=f"No crossover up to {v_max:,} tasks/month: managed stays cheaper.",
    )


def cost_curve(cm: CostModel, volume: int, crossover: int | None, points: int) -> Curve:
    """Both costs from 1 task to past the workload and the crossover, steps included."""
    top = max(2 * volume, int(math.ceil(1.5 * crossover)) if crossover else 0, 10)
    top = min(top, MAX_TASKS_PER_MONTH)
    vols: set[int] = {max(1, round(top * i / (points - 1))) for i in range(points)}
    vols.add(min(volume, top))
    if crossover:
        vols |= {max(1, crossover - 1), crossover}
    b = 1
    for _ in range(CURVE_BREAKPOINTS):
        nb = cm.next_break(b)
        if nb > top:
            break
        vols |= {nb - 1, nb}
        b = nb
    for upper, _ in cm.tiers:
        if upper is not None and cm.billed_minutes_per_task > 0:
            v = upper / cm.billed_minutes_per_task
            if v <= top:
                vols |= {max(1, math.floor(v)), math.ceil(v)}
    ordered = sorted(v for v in vols if 1 <= v <= top)
    return Curve(
        tasks_per_month=ordered,
        self_hosted_usd=[round(cm.self_hosted(v), 2) for v in ordered],
        managed_usd=[round(cm.managed(v), 2) for v in ordered],
    )
