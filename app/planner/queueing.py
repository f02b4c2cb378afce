"""M/G/c queueing: Erlang C with the Allen–Cunneen correction, and pool sizing to a wait.

Why a queueing model: sizing from average throughput with a fixed headroom leaves a
one-GPU pool with long queues (a 20-minute file waits behind the file in service) and
gives a 100-GPU pool far more slack than it needs. Erlang C captures both.

A pool has ``c`` servers (one per GPU for Whisper, ``batch_size`` per GPU for an LLM
under continuous batching), Poisson arrivals at ``lam`` tasks/s and a mean service
time ``s`` with squared coefficient of variation ``cs2``:

* offered load ``a = lam * s`` (Erlangs), utilisation ``rho = a / c`` (< 1 to be stable);
* Erlang B by the recurrence ``B(0) = 1, B(n) = a B(n-1) / (n + a B(n-1))``;
* Erlang C ``C = B / (1 - rho (1 - B))``: the probability that a task waits;
* Allen–Cunneen mean wait ``Wq = C / (c/s - lam) * (ca2 + cs2) / 2`` with ``ca2 = 1``;
* wait quantile: the conditional wait is taken as exponential with mean ``Wq / C``,
  so ``P(wait > t) = C exp(-t C / Wq)`` and ``t_p = Wq / C * ln(C / (1 - p))`` when
  ``C > 1 - p``, else 0.

Every evaluation counts against a :class:`WorkMeter`, so a plan's work is bounded
and measurable (the property tests assert it), not merely fast on this machine.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

# Waits are searched up to this many servers past the offered load; beyond it the
# wait is zero to float precision for any load the planner accepts.
MAX_WORK_UNITS = 3_000_000


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


def current_meter() -> WorkMeter:
    meter = _METER.get()
    if meter is None:
        meter = WorkMeter()
        _METER.set(meter)
    return meter


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
    if c <= 64:
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


def wait_quantile(prob_wait: float, mean_wait_s: float, p: float) -> float:
    if prob_wait <= 1.0 - p or mean_wait_s <= 0 or prob_wait <= 0:
        return 0.0
    return mean_wait_s / prob_wait * math.log(prob_wait / (1.0 - p))


def waits_from_b(b: float, c: int, lam: float, s: float, cs2: float) -> Waits:
    a = lam * s
    if c <= 0 or a >= c:
        return Waits(c, a / c if c > 0 else math.inf, 1.0, math.inf, math.inf, math.inf, False)
    pw = erlang_c_from_b(b, c, a)
    wq = pw / (c / s - lam) * (1.0 + cs2) / 2.0
    return Waits(
        servers=c,
        utilization=a / c,
        prob_wait=pw,
        mean_wait_s=wq,
        p50_wait_s=wait_quantile(pw, wq, 0.50),
        p95_wait_s=wait_quantile(pw, wq, 0.95),
        stable=True,
    )


def waits(c: int, lam: float, s: float, cs2: float) -> Waits:
    """Queue figures for ``c`` servers, arrival rate ``lam``/s, mean service ``s`` s."""
    a = lam * s
    if c <= 0 or a >= c:
        return waits_from_b(1.0, c, lam, s, cs2)
    if c > a + 12.0 * math.sqrt(a) + 40.0:
        # So many servers that P(wait) < 1e-30: nobody waits, and no O(c) sum is needed.
        current_meter().spend(1)
        return Waits(c, a / c, 0.0, 0.0, 0.0, 0.0, True)
    return waits_from_b(erlang_b(c, a), c, lam, s, cs2)


HALFIN_WHITT_MIN_LOAD = 100.0


def halfin_whitt_prob_wait(c: int, a: float) -> float:
    """Erlang C for large loads: ``[1 + beta Phi(beta) / phi(beta)]^-1``, ``beta = (c-a)/sqrt(a)``.

    Within a few per cent of the exact value above 100 Erlangs, in O(1).
    """
    beta = (c - a) / math.sqrt(a)
    if beta <= 0:
        return 1.0
    if beta > 37:
        return 0.0
    cdf = 0.5 * (1.0 + math.erf(beta / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * beta * beta) / math.sqrt(2.0 * math.pi)
    return 1.0 / (1.0 + beta * cdf / pdf)


def _waits_large(c: int, lam: float, s: float, cs2: float) -> Waits:
    a = lam * s
    if a >= c:
        return waits_from_b(1.0, c, lam, s, cs2)
    pw = halfin_whitt_prob_wait(c, a)
    wq = pw / (c / s - lam) * (1.0 + cs2) / 2.0
    return Waits(c, a / c, pw, wq, wait_quantile(pw, wq, 0.5), wait_quantile(pw, wq, 0.95), True)


def _p95_large(c: int, lam: float, s: float, cs2: float) -> float:
    """Just the p95 wait of :func:`_waits_large` (the bisection's only question)."""
    a = lam * s
    if a >= c:
        return math.inf
    pw = halfin_whitt_prob_wait(c, a)
    if pw <= 0.05:
        return 0.0
    return (1.0 + cs2) / 2.0 / (c / s - lam) * math.log(pw / 0.05)


def pool_waits(gpus: int, slots: int, lam: float, s: float, cs2: float) -> Waits:
    """Queue figures for ``gpus`` x ``slots`` servers (Halfin–Whitt above 100 Erlangs)."""
    c = gpus * slots
    if lam * s > HALFIN_WHITT_MIN_LOAD:
        current_meter().spend(1)
        return _waits_large(c, lam, s, cs2)
    return waits(c, lam, s, cs2)


def min_servers_for_wait(
    lam: float, s: float, cs2: float, slots: int, p95_budget_s: float, min_gpus: int = 1
) -> tuple[int, Waits]:
    """Cached :func:`_min_servers_for_wait` (a plan asks the same question per layout and
    per pass); a cache hit still costs one work unit."""
    current_meter().spend(1)
    return _min_servers_cached(lam, s, cs2, slots, max(0.0, p95_budget_s), min_gpus)


@lru_cache(maxsize=8192)
def _min_servers_cached(
    lam: float, s: float, cs2: float, slots: int, p95_budget_s: float, min_gpus: int
) -> tuple[int, Waits]:
    return _min_servers_for_wait(lam, s, cs2, slots, p95_budget_s, min_gpus)


def _min_servers_for_wait(
    lam: float, s: float, cs2: float, slots: int, p95_budget_s: float, min_gpus: int = 1
) -> tuple[int, Waits]:
    """Fewest GPUs (``slots`` servers each) whose p95 wait is within ``p95_budget_s``.

    Up to 100 Erlangs it starts at the smallest stable count and walks up the Erlang B
    recurrence one server at a time (O(1) each). The walk ends at the budget or, at the
    latest, once the probability of waiting is below 5 % (then the p95 wait is 0 by the
    formula above). Above 100 Erlangs it bisects with the Halfin–Whitt closed form.
    """
    a = lam * s
    p95_budget_s = max(0.0, p95_budget_s)
    gpus = max(min_gpus, math.floor(a / slots) + 1)
    meter = current_meter()
    if a > HALFIN_WHITT_MIN_LOAD:
        # Bisection over GPU counts; the closed form makes each probe O(1).
        lo, hi = gpus, gpus + max(1, math.ceil((12.0 * math.sqrt(a) + 10.0) / slots))
        while _p95_large(hi * slots, lam, s, cs2) > p95_budget_s:
            meter.spend(1)
            hi += hi - lo
        while lo < hi:
            meter.spend(1)
            mid = (lo + hi) // 2
            if _p95_large(mid * slots, lam, s, cs2) <= p95_budget_s:
                hi = mid
            else:
                lo = mid + 1
        return lo, _waits_large(lo * slots, lam, s, cs2)
    c = gpus * slots
    b = erlang_b(c, a)
    while True:
        w = waits_from_b(b, c, lam, s, cs2)
        if w.stable and w.p95_wait_s <= p95_budget_s:
            return gpus, w
        for _ in range(slots):
            c += 1
            b = a * b / (c + a * b)
        meter.spend(slots)
        gpus += 1
