"""Planner v3 crossover: every range where self-hosting is cheaper, checked step by step.

The brute force here walks the self-hosted staircase one step at a time (every volume
where the cheapest fleet's cost changes), and on each flat step finds exactly where each
managed line is above it. It shares nothing with app/planner/crossover.py but the cost
functions themselves.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.planner.build import FAVOURABLE, build
from app.planner.catalog import load_catalog
from app.planner.crossover import Staircase, cheaper_ranges, stays_cheaper_from
from app.planner.plan import plan
from app.planner.presets import PRESETS
from app.planner.schemas import PlanInput

SEED = PRESETS["seed-example"]
LO, HI = 1_000, 10_000_000


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


def staircase_steps(cost, lo: int, hi: int) -> list[tuple[int, float]]:
    """(first volume, cost) of every flat step of ``cost`` on [lo, hi]: gallop to a volume
    where the cost differs, then bisect to the first one. Asserts the cost never falls."""
    steps = [(lo, cost(lo))]
    v, c = lo, steps[0][1]
    while v < hi:
        step = 1
        while v + step <= hi and cost(v + step) == c:
            step *= 2
        top = min(v + step, hi)
        if cost(top) == c:
            break
        a, b = v + step // 2 if step > 1 else v, top  # cost(a) == c != cost(b)
        while b - a > 1:
            mid = (a + b) // 2
            a, b = (mid, b) if cost(mid) == c else (a, mid)
        assert cost(b) > c, f"self-hosted cost falls at {b:,}: {c} -> {cost(b)}"
        v, c = b, cost(b)
        steps.append((v, c))
    return steps


def brute_ranges(steps, hi: int, managed) -> list[tuple[int, int]]:
    """Volumes in [steps[0], hi] where the flat step is at or below ``managed``."""
    out: list[tuple[int, int]] = []
    for i, (start, c) in enumerate(steps):
        end = steps[i + 1][0] - 1 if i + 1 < len(steps) else hi
        if managed(end) < c:
            continue
        a, b = start, end  # first volume on the step with managed >= c
        while a < b:
            mid = (a + b) // 2
            a, b = (a, mid) if managed(mid) >= c else (mid + 1, b)
        if out and out[-1][1] + 1 == a:
            out[-1] = (out[-1][0], end)
        else:
            out.append((a, end))
    return out


def clip(spans, lo: int, hi: int) -> list[tuple[int, int]]:
    return [(max(a, lo), min(b, hi)) for a, b in spans if b >= lo and a <= hi]


@pytest.fixture(scope="module")
def seed_steps(catalog):
    cm = build(PlanInput(**SEED), catalog).cm
    s = Staircase(cm)
    return s, staircase_steps(s, LO, HI)


def test_seed_ranges_match_a_scan_of_every_step(catalog, seed_steps):
    """Done-when of issue 27: on the seed preset, from 10^3 to 10^7 tasks/month, the
    reported ranges match a brute-force scan of every volume step, for every baseline and
    for the cheapest like-for-like option."""
    s, steps = seed_steps
    assert len(steps) > 300  # one GPU step after another, all of them walked
    r = plan(PlanInput(**SEED), catalog)
    built = build(PlanInput(**SEED), catalog)
    costs = {b.id: b.cost for b in built.baselines}
    for b in r.baselines:
        reported = [(x.from_tasks, x.to_tasks or s.end) for x in b.crossover.ranges]
        assert not b.crossover.undecided
        assert clip(reported, LO, HI) == brute_ranges(steps, HI, costs[b.id]), b.id
    like = [costs[b.id] for b in r.baselines if b.comparable]

    def cheapest(v: int) -> float:
        return min(c(v) for c in like)

    reported = [(x.from_tasks, x.to_tasks or s.end) for x in r.crossover_cheapest.ranges]
    assert clip(reported, LO, HI) == brute_ranges(steps, HI, cheapest)
    rng = random.Random(27)  # and a dense sample of volumes, one by one
    inside = clip(reported, LO, HI)
    for v in (rng.randint(LO, HI) for _ in range(400)):
        assert (s(v) <= cheapest(v)) == any(a <= v <= b for a, b in inside), v


def test_first_cheaper_is_not_where_it_stays_cheaper(catalog):
    """Issue 27: against gpt-4o-mini-transcribe + Bedrock batch v2 reported one bisection
    point (82,272) though self-hosting was first cheaper at 72,775 and only stayed
    cheaper from 110,764. Now both are reported with every window between them, and
    self-hosting is cheaper at every step from the reported volume on."""
    r = plan(PlanInput(**SEED), catalog)
    b = next(x for x in r.baselines if x.id == "openai-gpt-4o-mini-transcribe+batch")
    co = b.crossover
    assert co.status == "found" and len(co.ranges) >= 2
    assert co.first_cheaper == co.ranges[0].from_tasks < co.tasks_per_month
    assert co.ranges[-1].from_tasks == co.tasks_per_month and co.ranges[-1].to_tasks is None
    assert "only stays cheaper from" in co.message
    built = build(PlanInput(**SEED), catalog)
    managed = next(x for x in built.baselines if x.id == b.id).cost
    s = Staircase(built.cm)
    x = co.tasks_per_month
    assert s(x) <= managed(x) and s(x - 1) > managed(x - 1)
    for v, c in staircase_steps(s, x, 10 * x):
        assert c <= managed(v)  # cheaper at the start of every later step
    gap = co.ranges[0].to_tasks + 1  # and not cheaper right after the first window
    assert s(gap) > managed(gap)


def test_chosen_baseline_crossover_by_hand(catalog):
    """Seed example vs Transcribe: one GPU per pool holds, so the crossover is where
    1.1 x (0.48709 V + shared) reaches the self-hosted total (Business support is 10 %)."""
    r = plan(PlanInput(**SEED), catalog)
    shared = 0.016 * 730 + 0.115 * 20 + 0.016 * 730 + 0.023 * 100 + 0.0305 * 730 + 2 * 3.65
    per_task = 20 * 0.024 + 4590 * 1e-6 + 500 * 5e-6
    sh = r.self_hosted.monthly_usd
    assert r.crossover.tasks_per_month == math.ceil((sh / 1.1 - shared) / per_task)
    assert r.crossover.ranges[-1].to_tasks is None


workloads = st.fixed_dictionaries(
    {
        "tasks_per_month": st.just(1000),
        "avg_minutes": st.floats(1, 90),
        "duration_cv": st.floats(0, 2),
        "p95_minutes": st.floats(3, 120),
        "diarize": st.booleans(),
        "llm_model": st.sampled_from(["llama-3.1-8b-instruct", "qwen2.5-7b-instruct-awq"]),
        "spot_share": st.sampled_from([0.0, 0.5]),
        "packing": st.sampled_from(["auto", "dedicated"]),
        "sizing": st.sampled_from(["queueing", "throughput"]),
    }
)


@given(w=workloads, a=st.integers(1, 3_000_000), span=st.integers(1, 400_000))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_self_hosted_cost_never_falls_as_volume_rises(catalog, w, a, span):
    """The range search relies on it; v2's greedy sizing broke it (with diarize and a
    6-minute target, cost fell six times as volume rose)."""
    cm = build(PlanInput(**w), catalog).cm
    vols = sorted({a, a + span, a + span // 2, a + 1})
    costs = [cm.self_hosted(v) for v in vols]
    assert costs == sorted(costs)


def test_issue_diarize_case_is_monotone(catalog):
    """The issue's case: seed + diarize + p95 6 min, scanned step by step up to 400,000."""
    inp = PlanInput(**{**SEED, "diarize": True, "p95_minutes": 6})
    s = Staircase(build(inp, catalog).cm)
    steps = staircase_steps(s, 1, 400_000)  # asserts every step goes up
    assert len(steps) > 20


@given(w=workloads)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_range_endpoints_are_exact(catalog, w):
    """Every reported range starts and ends exactly: cheaper at both ends, dearer one task
    outside; and the band's stays-cheaper-from matches the full search."""
    b = build(PlanInput(**w), catalog)
    s = Staircase(b.cm)
    for base in b.baselines[:4]:
        spans, undecided = cheaper_ranges(s, base.cost)
        assume(not undecided)
        for lo, hi in spans:
            assert s(lo) <= base.cost(lo) and s(hi) <= base.cost(hi)
            if lo > 1:
                assert s(lo - 1) > base.cost(lo - 1)
            if hi < s.end:
                assert s(hi + 1) > base.cost(hi + 1)
        top = spans[-1][0] if spans and spans[-1][1] >= s.end else None
        assert stays_cheaper_from(s, base.cost) == top


def test_band_is_computed_against_every_baseline(catalog):
    """v2 computed the band against Transcribe only, the dearest baseline."""
    r = plan(PlanInput(**SEED), catalog)
    fav = Staircase(build(PlanInput(**SEED), catalog, FAVOURABLE).cm)
    fav_costs = {x.id: x.cost for x in build(PlanInput(**SEED), catalog, FAVOURABLE).baselines}
    for b in r.baselines:
        assert b.band_low == stays_cheaper_from(fav, fav_costs[b.id])
        if b.band_low is not None and b.crossover.tasks_per_month is not None:
            assert b.band_low <= b.crossover.tasks_per_month
    assert r.band.cheapest_low is not None
    assert r.band.cheapest_low <= (r.crossover_cheapest.tasks_per_month or math.inf)


def test_batch_baselines_are_not_like_for_like(catalog):
    """A 15-minute p95 cannot be compared with Bedrock batch (up to 24 h)."""
    r = plan(PlanInput(**SEED), catalog)
    batch = [b for b in r.baselines if b.bedrock_mode == "batch"]
    assert batch and all(not b.comparable and b.turnaround_h == 24 for b in batch)
    assert all(b.comparable for b in r.baselines if b.bedrock_mode == "on-demand")
    cheapest = next(b for b in r.baselines if b.id == r.cheapest_managed)
    assert cheapest.comparable
    assert r.cheapest_if_you_can_wait and r.cheapest_if_you_can_wait.endswith("+batch")
    assert "If you can wait up to 24 h" in r.verdict
    # a day-long target makes them comparable
    day = plan(PlanInput(**{**SEED, "p95_minutes": 1440}), catalog)
    assert all(b.comparable for b in day.baselines)
    # the chosen baseline in batch mode is flagged
    chosen = plan(PlanInput(**{**SEED, "bedrock_batch": True}), catalog)
    assert any("not like-for-like" in w for w in chosen.warnings)


def test_cheapest_is_named_at_each_volume(catalog):
    r = plan(PlanInput(**SEED), catalog)
    built = build(PlanInput(**SEED), catalog)
    like = {b.id: b.cost for b in built.baselines if b.comparable}
    segs = r.cheapest_by_volume
    assert segs[0].from_tasks == 1 and segs[-1].to_tasks is None
    for seg in segs:
        for v in {seg.from_tasks, seg.to_tasks or 10**9}:
            assert min(like, key=lambda k: (like[k](v), k)) == seg.baseline
    for v, k in zip(r.curve.tasks_per_month, r.curve.cheapest_managed_id, strict=True):
        assert like[k](v) == min(c(v) for c in like.values())
