"""Every volume range where self-hosting is cheaper, found exactly with bounded work.

``self_hosted(V)`` is a step function of the monthly volume ``V``: it rises where a
pool gains a GPU and, with minimum-cost sizing, never falls (sizing.py says why).
``managed(V)`` is continuous and increasing. So self-hosting can be cheaper in several
windows: just after a managed line overtakes a step, until the next step. v2 bisected
for one crossing, which assumed a single one: against gpt-4o-mini-transcribe + Bedrock
batch it reported 82,272 tasks/month where self-hosting is first cheaper at 72,775 and
only stays cheaper from 110,764.

The search (:func:`cheaper_ranges`) keeps, for an interval ``[lo, hi]`` of volumes, the
bounds monotonicity gives: ``S(lo) <= S(V) <= S(hi)`` and ``M(lo) <= M(V) <= M(hi)``.

* ``S(hi) <= M(lo)``: cheaper on the whole interval; ``S(lo) > M(hi)``: nowhere;
* ``S(lo) == S(hi)``: no step inside, so cheaper exactly from the first ``V`` with
  ``M(V) >= S`` (a bisection on the managed line, which costs nothing);
* otherwise split in two.

Only intervals where a step meets the managed line are refined, so the work grows with
the number of windows, not with the range; the self-hosted costs are cached per volume
(:class:`Staircase`) and shared by every baseline of a scenario. The result is exact at
every integer volume from 1 to 10^9 (tests/test_planner_crossover.py checks it against
a scan of every step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from app.planner.costs import CostModel, PoolTooLarge
from app.planner.schemas import (
    MAX_TASKS_PER_MONTH,
    CheapestSegment,
    Crossover,
    Curve,
    VolumeRange,
)

POINTS_PER_DOUBLING = 4
Span = tuple[int, int]


def grid(v_max: int = MAX_TASKS_PER_MONTH) -> list[int]:
    """Seed volumes: four per doubling from 1 to ``v_max`` (121 up to 10^9)."""
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


class Staircase:
    """``self_hosted(V)`` with a cache, ``inf`` past the planner's pool limit, and the
    last volume it can size (:attr:`end`)."""

    def __init__(self, cm: CostModel) -> None:
        self.cm = cm
        self._memo: dict[int, float] = {}
        self._end: int | None = None

    def __call__(self, v: int) -> float:
        hit = self._memo.get(v)
        if hit is None:
            try:
                hit = self.cm.self_hosted(v)
            except PoolTooLarge:
                hit = math.inf
            self._memo[v] = hit
        return hit

    @property
    def end(self) -> int:
        """The largest volume up to 10^9 whose pools stay within the limit (0: none)."""
        if self._end is None:
            top = MAX_TASKS_PER_MONTH
            if math.isfinite(self(top)):
                self._end = top
            elif not math.isfinite(self(1)):
                self._end = 0
            else:
                lo, hi = 1, top  # S(lo) finite, S(hi) not: pool counts grow with volume
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if math.isfinite(self(mid)) else (lo, mid)
                self._end = lo
        return self._end


def _first_at_least(m: Callable[[int], float], level: float, lo: int, hi: int) -> int:
    """Smallest v in [lo, hi] with m(v) >= level, given m(hi) >= level and m increasing."""
    while lo < hi:
        mid = (lo + hi) // 2
        if m(mid) >= level:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


MAX_SPLITS = 400  # per search: interval halvings, each one self-hosted sizing at most


def _seed_intervals(end: int) -> list[Span]:
    seeds = [v for v in GRID if v < end] + [end]
    return list(zip(seeds, seeds[1:], strict=False)) or [(1, 1)]


def cheaper_ranges(
    s: Staircase, m: Callable[[int], float], budget: int = MAX_SPLITS
) -> tuple[list[Span], list[Span]]:
    """Every maximal ``[a, b]`` of integer volumes in ``[1, s.end]`` with ``S <= M``, and
    the intervals left undecided after ``budget`` halvings (a count, not a clock, so the
    answer does not depend on what other searches cached).

    Lower volumes are resolved first. An undecided interval is one where the two costs
    stay within one step of each other, so self-hosting and managed alternate there (it
    happens at very large volumes, where a staircase of GPU steps runs along a managed
    line of nearly the same slope); it is reported as such, never guessed.
    """
    end = s.end
    if end < 1:
        return [], []
    found: list[Span] = []
    undecided: list[Span] = []
    splits = 0
    stack = _seed_intervals(end)[::-1]
    while stack:
        lo, hi = stack.pop()
        slo, shi = s(lo), s(hi)
        mlo, mhi = m(lo), m(hi)
        if shi <= mlo:
            found.append((lo, hi))
        elif slo > mhi:
            continue
        elif slo == shi:
            found.append((_first_at_least(m, slo, lo, hi), hi))
        elif hi - lo <= 1:
            found.extend((v, v) for v in (lo, hi) if s(v) <= m(v))
        elif splits >= budget:
            undecided.append((lo, hi))
        else:
            splits += 1
            mid = (lo + hi) // 2
            stack.append((mid, hi))
            stack.append((lo, mid))
    spans = _merge(found)
    return spans, [
        u for u in _merge(undecided) if not any(a <= u[0] and u[1] <= b for a, b in spans)
    ]


def stays_cheaper_from(s: Staircase, m: Callable[[int], float]) -> int | None:
    """The volume from which self-hosting stays cheaper up to ``s.end`` (None: it is not
    cheaper there): one past the largest volume where it is not, found top-down."""
    end = s.end
    if end < 1 or s(end) > m(end):
        return None
    stack = _seed_intervals(end)
    while stack:
        lo, hi = stack.pop()
        slo, shi = s(lo), s(hi)
        if shi <= m(lo):
            continue  # all cheaper: look lower
        if slo > m(hi):
            return hi + 1
        if slo == shi:
            x = _first_at_least(m, slo, lo, hi)
            if x > lo:
                return x
            continue
        if hi - lo <= 1:
            if s(hi) > m(hi):
                return hi + 1
            if s(lo) > m(lo):
                return lo + 1
            continue
        mid = (lo + hi) // 2
        stack.append((lo, mid))
        stack.append((mid, hi))
    return 1


def _fmt_range(a: int, b: int, end: int) -> str:
    return f"{a:,}+" if b >= end else (f"{a:,}" if a == b else f"{a:,}-{b:,}")


def crossover_from(
    spans: list[Span],
    s: Staircase,
    m: Callable[[int], float],
    label: str,
    undecided: list[Span] | None = None,
) -> Crossover:
    """The honest summary of ``spans``: where self-hosting stays cheaper, where it is
    first cheaper, every window in between, and any range left undecided."""
    undecided = undecided or []
    end = s.end
    ranges = [VolumeRange(from_tasks=a, to_tasks=None if b >= end else b) for a, b in spans]
    unsure = [VolumeRange(from_tasks=a, to_tasks=None if b >= end else b) for a, b in undecided]
    where = f"{end:,} tasks/month" + ("" if end >= MAX_TASKS_PER_MONTH else " (the pool limit)")
    caveat = (
        f" Between {undecided[0][0]:,} and {undecided[-1][1]:,} the two costs stay within "
        "one GPU step of each other and alternate; those volumes were not resolved."
        if undecided
        else ""
    )
    common = {"ranges": ranges, "undecided": unsure, "search_end": end}
    if not spans:
        return Crossover(
            status="search_limit" if undecided else "none",
            tasks_per_month=None,
            message=f"No crossover up to {where}: {label} stays cheaper." + caveat,
            **common,
        )
    first = spans[0][0]
    listed = ", ".join(_fmt_range(a, b, end) for a, b in spans[:6])
    more = f" and {len(spans) - 6} more" if len(spans) > 6 else ""
    if spans[-1][1] >= end:
        x = spans[-1][0]
        sh, mg = s(x), m(x)
        if x == 1:
            msg = f"Self-hosting is cheaper than {label} from the first task."
        elif len(spans) == 1:
            msg = (
                f"Self-hosting becomes cheaper than {label} at {x:,} tasks/month "
                f"(${sh:,.2f} vs ${mg:,.2f}) and stays cheaper up to {where}."
            )
        else:
            msg = (
                f"Self-hosting is first cheaper than {label} at {first:,} tasks/month but "
                f"only stays cheaper from {x:,} (${sh:,.2f} vs ${mg:,.2f}); cheaper in: "
                f"{listed}{more}."
            )
        return Crossover(
            status="always_cheaper" if x == 1 else "found",
            tasks_per_month=x,
            first_cheaper=first,
            self_hosted_usd=sh,
            managed_usd=mg,
            message=msg + caveat,
            **common,
        )
    return Crossover(
        status="search_limit" if undecided else "windows",
        tasks_per_month=None,
        first_cheaper=first,
        message=f"Self-hosting is cheaper than {label} only in windows that close again "
        f"({listed}{more}); above {spans[-1][1]:,} tasks/month {label} is cheaper again." + caveat,
        **common,
    )


def find_crossover(
    cm: CostModel | Staircase, managed: Callable[[int], float], label: str = "managed"
) -> Crossover:
    s = cm if isinstance(cm, Staircase) else Staircase(cm)
    spans, undecided = cheaper_ranges(s, managed)
    return crossover_from(spans, s, managed, label, undecided)


def cheapest_segments(end: int, costs: dict[str, Callable[[int], float]]) -> list[CheapestSegment]:
    """Which baseline is cheapest on which volumes, from 1 to ``end`` (switches found by
    bisection between the seed volumes; a baseline cheapest only inside one quarter-
    octave between two others could be missed, which does not change any crossover)."""
    if not costs or end < 1:
        return []

    def best(v: int) -> str:
        return min(costs, key=lambda k: (costs[k](v), k))

    seeds = [v for v in GRID if v < end] + [end]
    segs: list[tuple[int, str]] = [(1, best(1))]
    prev = 1
    for b in seeds[1:]:
        while best(b) != segs[-1][1]:
            lo, hi = prev, b  # best(lo) is the current one, best(hi) is not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if best(mid) == segs[-1][1] else (lo, mid)
            segs.append((hi, best(hi)))
            prev = hi
        prev = b
    return [
        CheapestSegment(
            from_tasks=seg[0],
            to_tasks=(segs[i + 1][0] - 1) if i + 1 < len(segs) else None,
            baseline=seg[1],
        )
        for i, seg in enumerate(segs)
    ]


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


def sizable(cm: CostModel | Staircase, vols: list[int]) -> list[int]:
    """``vols`` up to the first one the planner cannot size (the pool limit)."""
    s = cm if isinstance(cm, Staircase) else Staircase(cm)
    out = []
    for v in vols:
        if not math.isfinite(s(v)):
            break
        out.append(v)
    return out


def cost_curve(
    s: Staircase,
    managed: Callable[[int], float],
    cheapest: Callable[[int], tuple[float, str]],
    vols: list[int],
) -> Curve:
    vols = sizable(s, vols)
    low = [cheapest(v) for v in vols]
    return Curve(
        tasks_per_month=vols,
        self_hosted_usd=[round(s(v), 2) for v in vols],
        managed_usd=[round(managed(v), 2) for v in vols],
        cheapest_managed_usd=[round(c, 2) for c, _ in low],
        cheapest_managed_id=[k for _, k in low],
    )
