"""The planner's queueing model and its bounds, against closed forms worked by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.planner.catalog import load_catalog
from app.planner.plan import plan
from app.planner.queueing import (
    MAX_WORK_UNITS,
    WorkBudgetExceeded,
    WorkMeter,
    erlang_b,
    erlang_c_from_b,
    halfin_whitt_prob_wait,
    min_servers_for_wait,
    reset_meter,
    use_meter,
    waits,
)
from app.planner.schemas import PlanInput, PlannerInputError


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


def test_erlang_b_and_c_closed_forms():
    # M/M/1: B = a / (1 + a), C = rho.
    assert erlang_b(1, 0.5) == pytest.approx(0.5 / 1.5)
    assert erlang_c_from_b(erlang_b(1, 0.5), 1, 0.5) == pytest.approx(0.5)
    # M/M/2 at a = 1: B = (1/2) / (1 + 1 + 1/2) = 0.2; C = 2 rho^2 / (1 + rho) = 1/3.
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_c_from_b(0.2, 2, 1.0) == pytest.approx(1 / 3)
    # the truncated-sum path (c > 64) agrees with the recurrence
    b_rec = 1.0
    for n in range(1, 81):
        b_rec = 70.0 * b_rec / (n + 70.0 * b_rec)
    assert erlang_b(80, 70.0) == pytest.approx(b_rec, rel=1e-9)


def test_allen_cunneen_reduces_to_mm1():
    # M/M/1 (cs2 = 1): Wq = rho / (mu - lam); P(wait > t) = rho exp(-(mu - lam) t).
    lam, s = 0.5, 1.0
    w = waits(1, lam, s, 1.0)
    assert w.mean_wait_s == pytest.approx(0.5 / (1 - 0.5))
    assert w.p95_wait_s == pytest.approx(math.log(0.5 / 0.05) / (1 - 0.5))
    assert w.p50_wait_s == pytest.approx(0.0)  # P(wait) = 0.5: the median task does not wait
    # deterministic service halves the mean wait (M/D/1)
    assert waits(1, lam, s, 0.0).mean_wait_s == pytest.approx(w.mean_wait_s / 2)


def test_unstable_pool_reports_infinite_wait():
    w = waits(2, 3.0, 1.0, 1.0)
    assert not w.stable and w.p95_wait_s == math.inf


def test_halfin_whitt_close_to_exact_above_100_erlangs():
    for a, c in [(100, 110), (400, 420), (1000, 1040)]:
        exact = erlang_c_from_b(erlang_b(c, a), c, a)
        assert halfin_whitt_prob_wait(c, a) == pytest.approx(exact, abs=0.02)


@given(
    lam=st.floats(1e-4, 50),
    s=st.floats(0.1, 3000),
    slots=st.sampled_from([1, 16, 32]),
    budget=st.floats(0, 3600),
)
@settings(max_examples=80, deadline=None)
def test_min_servers_is_the_smallest_count_meeting_the_budget(lam, s, slots, budget):
    gpus, w = min_servers_for_wait(lam, s, 0.25, slots, budget)
    assert w.stable and w.p95_wait_s <= budget + 1e-9
    if gpus > math.floor(lam * s / slots) + 1:  # one GPU fewer misses it (or is unstable)
        fewer = waits((gpus - 1) * slots, lam, s, 0.25) if lam * s <= 100 else None
        if fewer is not None:
            assert not fewer.stable or fewer.p95_wait_s > budget


def test_work_meter_stops_runaway_work():
    meter = WorkMeter(budget=100)
    token = use_meter(meter)
    try:
        with pytest.raises(WorkBudgetExceeded):
            for _ in range(1000):
                erlang_b(60, 50.0)
    finally:
        reset_meter(token)


# ------------------------------------------------- the whole request schema

names = st.sampled_from
requests = st.fixed_dictionaries(
    {
        "tasks_per_month": st.integers(1, 10**9),
        "avg_minutes": st.floats(1e-6, 1440) | st.sampled_from([5e-324, 0.01, 1440]),
    },
    optional={
        "duration_cv": st.floats(0, 4),
        "active_hours_per_day": st.floats(1, 24),
        "active_days_per_month": st.floats(1, 31),
        "peak_factor": st.floats(1, 24),
        "sizing": names(["queueing", "throughput"]),
        "p95_minutes": st.floats(0.5, 10080),
        "target_utilization": st.floats(0.05, 1),
        "words_per_minute": st.floats(10, 600),
        "tokens_per_word": st.floats(0.2, 5),
        "prompt_overhead_tokens": st.integers(0, 100_000),
        "summary_tokens_in": st.none() | st.integers(1, 2_000_000),
        "summary_tokens_out": st.integers(1, 100_000),
        "gpu": names(["T4", "A10G", "L4", "L40S", "A100", "H100", "V100"]),
        "stt_model": names(["whisper-large-v3", "whisper-large-v3-turbo", "whisper-small"]),
        "llm_model": names(
            ["llama-3.1-8b-instruct", "qwen2.5-7b-instruct-awq", "qwen2.5-0.5b-instruct"]
        ),
        "bedrock_model": names(["claude-haiku-4.5", "claude-3-haiku", "nova-micro", "nova-2-lite"]),
        "bedrock_batch": st.booleans(),
        "managed_stt": names(
            [
                "aws-transcribe",
                "openai-whisper-1",
                "deepgram-nova-3",
                "openai-gpt-4o-transcribe-diarize",
                "assemblyai-universal-2",
            ]
        ),
        "support_plan": names(["none", "developer", "business"]),
        "scale_up_delay_minutes": st.floats(0, 120),
        "bedrock_in_region": st.booleans(),
        "max_utilization": st.floats(0.1, 1),
        "diarize": st.booleans(),
        "diarizer_device": names(["cpu", "gpu"]),
        "diarizer_audio_s_per_s": st.none() | st.floats(1e-6, 100_000),
        "packing": names(["auto", "dedicated", "packed"]),
        "packing_efficiency": st.floats(0.1, 1),
        "spot_share": st.floats(0, 1),
        "spot_interruption_overhead": st.floats(0, 1),
        "commitment": names(["none", "savings-plan-1y", "savings-plan-3y"]),
        "ha": st.booleans(),
        "ops_hours_per_month": st.floats(0, 744),
        "ops_usd_per_hour": st.floats(0, 1000),
        "always_on": st.booleans(),
        "include_fixed_costs": st.booleans(),
        "curve_points": st.integers(10, 200),
    },
)


@given(body=requests)
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_valid_request_plans_or_names_a_field_within_the_work_budget(catalog, body):
    """No input may hang or crash the planner: each gives a plan or a PlannerInputError
    naming a field, and a plan's work stays within MAX_WORK_UNITS."""
    try:
        inp = PlanInput(**body)
    except ValidationError:
        return
    meter = WorkMeter()
    try:
        r = plan(inp, catalog, meter=meter)
    except PlannerInputError as exc:
        assert exc.field in PlanInput.model_fields
        return
    assert meter.used <= MAX_WORK_UNITS and r.work_units == meter.used
    assert r.self_hosted.monthly_usd > 0 and math.isfinite(r.self_hosted.monthly_usd)
    assert all(math.isfinite(x) for x in r.curve.self_hosted_usd)
    for b in r.baselines:  # every range lies within the search and in order
        ends = [(x.from_tasks, x.to_tasks or b.crossover.search_end) for x in b.crossover.ranges]
        assert all(1 <= a <= z for a, z in ends)
        assert all(z1 < a2 for (_, z1), (a2, _) in zip(ends, ends[1:], strict=False))
    for p in r.sizing.pools:
        assert p.gpus >= 1
    if inp.sizing == "queueing" and r.sizing.meets_target:
        assert r.sizing.predicted_p95_s <= inp.p95_minutes * 60 + 1e-6
