"""M/G/c queueing: Erlang C with the Allen–Cunneen correction, and wait curves for sizing.

Why a queueing model: sizing from average throughput with a fixed headroom leaves a
one-GPU pool with long queues (a 20-minute file waits behind the file in service) and
gives a 100-GPU pool far more slack than it needs. Erlang C captures both.

A pool has ``c`` servers (one per GPU for Whisper, ``batch_size`` per GPU for an LLM
under continuous batching), Poisson arrivals at ``lam`` tasks/s and a mean service
time ``s`` with squared coefficient of variation ``cs2``:

* offered load ``a = lam * s`` (Erlangs), utilisation ``rho = a / c`` (< 1 to be stable);
* Erlang B by the recurrence ``B(0) = 1, B(n) = a B(n-1) / (n + a B(n-1))``;
* Erlang C ``C = B / (1 - rho (1 - B))``: the probability that a task waits;
* Allen–Cunneen mean wait ``Wq = C s / (c - a) * (ca2 + cs2) / 2`` with ``ca2 = 1``;
* wait quantile: the conditional wait is taken as exponential with mean ``Wq / C``,
  so ``t_p = s / (c - a) * (1 + cs2) / 2 * ln(C / (1 - p))`` when ``C > 1 - p``, else 0.

Every formula is written so that it is total: ``s / (c - a)`` with ``c > a`` checked
first, never ``c / s`` (a subnormal ``s`` made that ``inf`` and the plan a 500), and no
division by ``C``.

Up to :data:`EXACT_MAX_SERVERS` servers ``C`` is exact; above, the Halfin–Whitt closed
form is used. The switch depends on ``c`` alone, never on the load, so for a fixed
pool every wait grows with the arrival rate: that keeps the minimum cost of a plan
monotone in volume, which the crossover search relies on.

Every evaluation counts against a :class:`WorkMeter`, so a plan's work is bounded
and measurable (the property tests assert it), not merely fast on this machine.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

MAX_WORK_UNITS = 3_000_000
EXACT_MAX_SERVERS = 400
P95 = 0.95


class WorkBudgetExceeded(Exception):
    """A plan needed more Erlang evaluations than :data:`MAX_WORK_UNITS`."""


class WorkMeter:
    """Counts recurrence steps; raises once the budget is spent."""

    def __init__(self, budget: int = MAX_WORK_UNITS) -> None:
        self.budget = budget
        self.used = 0

    def spend(self, units: int) -> None:
        self.used += units
        if self.used > self.budget:
            raise WorkBudgetExceeded(
                f"planning needed more than {self.budget:,} work units; "
                "the workload is outside what the planner sizes"
            )


_METER: ContextVar[WorkMeter | None] = ContextVar("planner_work_meter", default=None)
# Outside plan() (tests, benchmarks, a REPL) nothing is budgeted: plan() installs its own.
_UNMETERED = WorkMeter(budget=2**62)


def current_meter() -> WorkMeter:
    return _METER.get() or _UNMETERED


def use_meter(meter: WorkMeter) -> object:
    """Install ``meter`` for this context; returns the token for :func:`reset_meter`."""
    return _METER.set(meter)


def reset_meter(token: object) -> None:
    _METER.reset(token)  # type: ignore[arg-type]


def _log_erlang_b_direct(c: int, a: float) -> float:
    """log B(c, a) from the truncated Poisson sum, O(c - a + 12 sqrt(a)) steps."""
    # 1/B = sum_{j=0..c} prod_{i<j} (c - i) / a ; sum in log space.
    floor = a - 12.0 * math.sqrt(a) - 20.0
    logs: list[float] = [0.0]
    acc = 0.0
    k = c
    while k > 0 and k > floor:
        acc += math.log(k / a)
        logs.append(acc)
        k -= 1
    current_meter().spend(len(logs))
    top = max(logs)
    total = sum(math.exp(x - top) for x in logs)
    return -(top + math.log(total))


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of ``c`` servers at offered load ``a`` (Erlangs)."""
    if c <= 0:
        return 1.0
    if a <= 0:
        return 0.0
    if c <= EXACT_MAX_SERVERS:
        b = 1.0
        for n in range(1, c + 1):
            b = a * b / (n + a * b)
        current_meter().spend(c)
        return b
    return math.exp(_log_erlang_b_direct(c, a))


def erlang_c_from_b(b: float, c: int, a: float) -> float:
    rho = a / c
    return b / (1.0 - rho * (1.0 - b))


@dataclass(frozen=True)
class Waits:
    """Queue figures of one pool at one server count."""

    servers: int
    utilization: float
    prob_wait: float
    mean_wait_s: float
    p50_wait_s: float
    p95_wait_s: float
    stable: bool


def _scale(c: int, a: float, s: float, cs2: float) -> float:
    """``Wq / C``: the mean wait of a task that waits, ``s / (c - a) (1 + cs2) / 2``."""
    return s / (c - a) * (1.0 + cs2) / 2.0


def _quantile(pw: float, scale: float, p: float) -> float:
    return scale * math.log(pw / (1.0 - p)) if pw > 1.0 - p and scale > 0 else 0.0


def wait_quantile(prob_wait: float, mean_wait_s: float, p: float) -> float:
    """``t_p`` from ``P(wait)`` and the mean wait (kept for callers that hold both)."""
    if prob_wait <= 1.0 - p or mean_wait_s <= 0 or prob_wait <= 0:
        return 0.0
    return mean_wait_s / prob_wait * math.log(prob_wait / (1.0 - p))


def _unstable(c: int, a: float) -> Waits:
    util = a / c if c > 0 else math.inf
    return Waits(c, util, 1.0, math.inf, math.inf, math.inf, False)


def _waits_from_c(pw: float, c: int, a: float, s: float, cs2: float) -> Waits:
    scale = _scale(c, a, s, cs2)
    return Waits(
        servers=c,
        utilization=a / c,
        prob_wait=pw,
        mean_wait_s=pw * scale,
        p50_wait_s=_quantile(pw, scale, 0.50),
        p95_wait_s=_quantile(pw, scale, P95),
        stable=True,
    )


def waits_from_b(b: float, c: int, lam: float, s: float, cs2: float) -> Waits:
    a = lam * s
    if c <= 0 or not a < c:
        return _unstable(c, a)
    return _waits_from_c(erlang_c_from_b(b, c, a), c, a, s, cs2)


def _negligible(c: int, a: float) -> bool:
    """So many servers that P(wait) < 1e-30: nobody waits, and no O(c) sum is needed."""
    return c > a + 12.0 * math.sqrt(a) + 40.0


def halfin_whitt_prob_wait(c: int, a: float) -> float:
    """Erlang C for large pools: ``[1 + beta Phi(beta) / phi(beta)]^-1``, ``beta = (c-a)/sqrt(a)``.

    Within about 0.02 of the exact value above 100 Erlangs, in O(1).
    """
    if a <= 0:
        return 0.0
    beta = (c - a) / math.sqrt(a)
    if beta <= 0:
        return 1.0
    if beta > 37:
        return 0.0
    cdf = 0.5 * (1.0 + math.erf(beta / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * beta * beta) / math.sqrt(2.0 * math.pi)
    return 1.0 / (1.0 + beta * cdf / pdf)


def waits(c: int, lam: float, s: float, cs2: float) -> Waits:
    """Queue figures for ``c`` servers, arrival rate ``lam``/s, mean service ``s`` s.

    Exact Erlang C up to :data:`EXACT_MAX_SERVERS` servers, Halfin–Whitt above.
    """
    a = lam * s
    if c <= 0 or not a < c:
        return _unstable(c, a)
    current_meter().spend(1)
    if _negligible(c, a):
        return Waits(c, a / c, 0.0, 0.0, 0.0, 0.0, True)
    if c > EXACT_MAX_SERVERS:
        return _waits_from_c(halfin_whitt_prob_wait(c, a), c, a, s, cs2)
    return _waits_from_c(erlang_c_from_b(erlang_b(c, a), c, a), c, a, s, cs2)


def pool_waits(gpus: int, slots: int, lam: float, s: float, cs2: float) -> Waits:
    """Queue figures for ``gpus`` x ``slots`` servers."""
    return waits(gpus * slots, lam, s, cs2)


def stable_gpus(a: float, slots: int) -> int:
    """Fewest GPUs whose ``c = gpus * slots`` servers exceed the load ``a``."""
    return max(1, math.floor(a / slots) + 1)


def wait_curve(lam: float, s: float, cs2: float, slots: int, first_gpus: int) -> tuple[float, ...]:
    """p95 waits at ``first_gpus``, ``first_gpus + 1``, ... GPUs, ending at the first 0.

    More GPUs than the last entry cannot shorten the wait, so the sizing search never
    needs them. ``first_gpus`` must be stable (see :func:`stable_gpus`). Cost: O(c) for
    the first exact point, then O(slots) per GPU; O(1) per GPU above the exact range.
    """
    current_meter().spend(1)
    return _wait_curve(lam, s, cs2, slots, first_gpus)


@lru_cache(maxsize=16_384)
def _wait_curve(lam: float, s: float, cs2: float, slots: int, first_gpus: int) -> tuple[float, ...]:
    a = lam * s
    meter = current_meter()
    out: list[float] = []
    n = first_gpus
    c = n * slots
    b = erlang_b(c, a) if c <= EXACT_MAX_SERVERS else 0.0
    while True:
        if not a < c:
            raise ValueError("wait_curve needs a stable first count")
        if _negligible(c, a):
            pw = 0.0
        elif c <= EXACT_MAX_SERVERS:
            pw = erlang_c_from_b(b, c, a)
        else:
            pw = halfin_whitt_prob_wait(c, a)
        w = _quantile(pw, _scale(c, a, s, cs2), P95)
        out.append(w)
        if w <= 0.0:
            return tuple(out)
        for _ in range(slots):
            c += 1
            if c <= EXACT_MAX_SERVERS:
                b = a * b / (c + a * b)
        meter.spend(slots if c <= EXACT_MAX_SERVERS else 1)
        n += 1


def min_servers_for_wait(
    lam: float, s: float, cs2: float, slots: int, p95_budget_s: float, min_gpus: int = 1
) -> tuple[int, Waits]:
    """Fewest GPUs (``slots`` servers each, at least ``min_gpus``) whose p95 wait is
    within ``p95_budget_s``, and their queue figures."""
    a = lam * s
    first = max(min_gpus, stable_gpus(a, slots))
    curve = wait_curve(lam, s, cs2, slots, first)
    budget = max(0.0, p95_budget_s)
    i = next(i for i, w in enumerate(curve) if w <= budget)
    return first + i, pool_waits(first + i, slots, lam, s, cs2)
