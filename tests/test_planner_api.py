"""POST /v1/plan and friends over real HTTP (FastAPI TestClient) with the project's errors."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.errors import install_error_handlers
from app.api.routes_planner import _load, page_router, router

HOURS, L4_HOURLY = 730, 0.8048
IPV4 = 0.005 * 730
OWN = 0.10 * 730 + 0.1008 * 730 + 0.045 * 730 + IPV4 + 0.045 * 200 + 0.50 * 30
SHARED = 0.016 * 730 + 0.115 * 20 + 0.016 * 730 + 0.023 * 100 + 0.0305 * 730 + 2 * IPV4
PER_NODE, OPS = 16.0, 800.0
# two always-on L4 nodes and the platform: $1,471.62 of AWS, 10 % Business support, ops
TWO_NODES = (2 * HOURS * L4_HOURLY + OWN + 2 * PER_NODE + SHARED) * 1.1 + OPS


@pytest.fixture()
def client(monkeypatch):
    monkeypatch.delenv("AIPP_PLANNER_CATALOG", raising=False)
    _load.cache_clear()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(page_router)
    with TestClient(app) as c:
        yield c
    _load.cache_clear()


def test_plan_seed_example_over_http(client):
    options = client.get("/v1/plan/options").json()
    body = options["presets"]["seed-example"]
    r = client.post("/v1/plan", json=body)
    assert r.status_code == 200
    data = r.json()
    assert data["sizing"]["stt_gpus"] == 1 and data["sizing"]["llm_gpus"] == 1
    assert data["self_hosted"]["monthly_usd"] == pytest.approx(TWO_NODES)  # $2,418.78
    assert data["managed"]["monthly_usd"] == pytest.approx(3850 * 1.1, rel=0.05)
    assert data["crossover"]["status"] == "found"
    assert data["crossover"]["ranges"] == [{"from_tasks": 4397, "to_tasks": None}]
    headline = data["crossover_cheapest"]
    assert headline["status"] == "found" and len(headline["ranges"]) > 1
    assert headline["first_cheaper"] < headline["tasks_per_month"]
    assert data["cheapest_managed"] == "assemblyai-universal-2+on-demand"
    assert data["cheapest_if_you_can_wait"] == "assemblyai-universal-2+batch"
    assert data["sizing"]["method"] == "queueing"
    assert {p["pool"] for p in data["sizing"]["pools"]} == {"stt", "llm"}
    assert data["band"]["crossover_low"] <= data["crossover"]["tasks_per_month"]
    # prices last checked in 2025 are named in a warning, with their dates
    assert data["stale_sources"]["aws-ec2-on-demand"] == "2025-07-01"
    assert any("aws-ec2-on-demand (2025-07-01)" in w for w in data["warnings"])
    assert data["catalog_as_of"] == "2026-12-04"
    assert data["replica_advice"]["gpu_type"] == "L4"
    assert set(data["replica_advice"]["deployments"]) == {"Transcriber", "Summarizer", "Ingress"}
    curve = data["curve"]
    assert (
        len(curve["tasks_per_month"]) == len(curve["self_hosted_usd"]) == len(curve["managed_usd"])
    )
    assert curve["tasks_per_month"] == sorted(curve["tasks_per_month"])
    assert data["sources"]["aws-transcribe"]["url"].startswith("https://aws.amazon.com/")


def test_plan_small_workload_by_hand(client):
    r = client.post("/v1/plan", json={"tasks_per_month": 100, "avg_minutes": 10})
    assert r.status_code == 200
    data = r.json()
    assert data["self_hosted"]["monthly_usd"] == pytest.approx(TWO_NODES)
    names = [i["name"] for i in data["self_hosted"]["line_items"]]
    assert names[0].startswith("GPU nodes on-demand (g6.xlarge, 2 x L4)")
    assert "Kubernetes control plane (EKS)" in names
    assert data["cheaper"] == "managed"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"tasks_per_month": 0, "avg_minutes": 5}, "tasks_per_month"),
        ({"tasks_per_month": -10, "avg_minutes": 5}, "tasks_per_month"),
        ({"tasks_per_month": 2_000_000_000, "avg_minutes": 5}, "tasks_per_month"),
        ({"tasks_per_month": 1.5, "avg_minutes": 5}, "tasks_per_month"),
        ({"avg_minutes": 5}, "tasks_per_month"),
        ({"tasks_per_month": 10, "avg_minutes": -1}, "avg_minutes"),
        ({"tasks_per_month": 10, "avg_minutes": "lots"}, "avg_minutes"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "spot_share": 2}, "spot_share"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "packing": "maybe"}, "packing"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "gpu": "V100"}, "gpu"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "stt_model": "x"}, "stt_model"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "llm_model": "x"}, "llm_model"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "bedrock_model": "x"}, "bedrock_model"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "packing": "packed"}, "packing"),
        ({"tasks_per_month": 10, "avg_minutes": 5, "managed_stt": "x"}, "managed_stt"),
        (
            {"tasks_per_month": 10, "avg_minutes": 5, "target_utilization": 1e-300},
            "target_utilization",
        ),
        (
            {"tasks_per_month": 10, "avg_minutes": 5, "active_hours_per_day": 1e-9},
            "active_hours_per_day",
        ),
        ({"tasks_per_month": 10, "avg_minutes": 5, "p95_minutes": 0}, "p95_minutes"),
        ({"tasks_per_month": 10**9, "avg_minutes": 1440, "peak_factor": 24}, "peak_factor"),
        (
            {
                "tasks_per_month": 10**9,
                "avg_minutes": 1440,
                "active_hours_per_day": 24,
                "peak_factor": 24,
            },
            "tasks_per_month",
        ),
        # issue 26: the smallest subnormal double made the queueing maths divide by zero
        ({"tasks_per_month": 10, "avg_minutes": 5e-324, "sizing": "queueing"}, "avg_minutes"),
        ({"tasks_per_month": 10, "avg_minutes": 2.2e-308}, "avg_minutes"),
        ({"tasks_per_month": 10, "avg_minutes": 0.001}, "avg_minutes"),
        (
            {
                "tasks_per_month": 10,
                "avg_minutes": 5,
                "diarize": True,
                "diarizer_audio_s_per_s": 5e-324,
            },
            "diarizer_audio_s_per_s",
        ),
        ({"tasks_per_month": 10, "avg_minutes": 5, "words_per_minute": 5e-324}, "words_per_minute"),
        (
            {"tasks_per_month": 10, "avg_minutes": 5, "packing_efficiency": 1e-300},
            "packing_efficiency",
        ),
        (
            {"tasks_per_month": 10, "avg_minutes": 5, "scale_up_delay_minutes": 1e300},
            "scale_up_delay_minutes",
        ),
    ],
)
def test_422_names_the_field(client, body, field):
    r = client.post("/v1/plan", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert err["field"] == field
    assert field in err["message"]


def test_nan_in_json_is_rejected(client):
    r = client.post(
        "/v1/plan",
        content=b'{"tasks_per_month": 10, "avg_minutes": NaN}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "avg_minutes"


def test_malformed_json_body(client):
    r = client.post("/v1/plan", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


def test_bad_catalog_env_is_a_500_in_the_error_shape(client, tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [oops")
    monkeypatch.setenv("AIPP_PLANNER_CATALOG", str(bad))
    r = client.post("/v1/plan", json={"tasks_per_month": 10, "avg_minutes": 5})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "catalog_invalid"
    assert "not valid YAML" in r.json()["error"]["message"]


def test_catalog_env_override_changes_prices(client, tmp_path, monkeypatch):
    mine = tmp_path / "mine.yaml"
    mine.write_text("gpus:\n  L4:\n    on_demand_usd_per_hour: 2.0\n")
    monkeypatch.setenv("AIPP_PLANNER_CATALOG", str(mine))
    r = client.post("/v1/plan", json={"tasks_per_month": 100, "avg_minutes": 10})
    assert r.status_code == 200
    assert r.json()["gpu"]["on_demand_usd_per_hour"] == 2.0
    assert r.json()["self_hosted"]["line_items"][0]["monthly_usd"] == pytest.approx(2 * 730 * 2.0)


def test_options_and_catalog(client):
    o = client.get("/v1/plan/options").json()
    assert set(o["gpus"]) == {"T4", "A10G", "L4", "L40S", "A100", "H100"}
    assert "T4" not in o["llm_models"]["llama-3.1-8b-instruct"]
    assert "claude-haiku-4.5" in o["bedrock_models"]
    assert o["retired_bedrock_models"] == ["claude-3-haiku", "claude-3.5-haiku"]
    assert o["lifecycle"]["claude-haiku-4.5"] == "active"
    assert o["lifecycle"]["llama-3.1-8b"] == "legacy"
    assert "deepgram-nova-3" in o["managed_stt"] and o["catalog_as_of"] == "2026-12-04"
    assert o["support_plans"] == ["none", "developer", "business"]
    assert o["defaults"]["gpu"] == "L4" and "tasks_per_month" not in o["defaults"]
    cat = client.get("/v1/plan/catalog").json()
    assert cat["managed"]["transcribe"]["minimum_billed_seconds"] == 15


def test_openapi_shows_the_schemas(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/plan"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PlanInput"
    )
    assert "422" in post["responses"]
    props = spec["components"]["schemas"]["PlanInput"]["properties"]
    assert props["tasks_per_month"]["maximum"] == 1_000_000_000
    assert "PlanResult" in spec["components"]["schemas"]
    assert "/planner" not in spec["paths"]


def test_page_and_assets_are_served(client):
    page = client.get("/planner")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/planner/planner.js">' in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing remote
    js = client.get("/planner/planner.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "/v1/plan" in js.text
    css = client.get("/planner/planner.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert client.get("/planner/nothing.js").status_code == 404
    assert client.get("/planner/nothing.js").json()["error"]["code"] == "not_found"


# ------------------------------------------------------------------ fuzzing

# Inputs v1 hung on (cost_curve looping) or crashed on (NaN in gpus_needed): a tiny
# utilisation or active-hours value made a pool's GPU count overflow.
V1_HANGS = [
    {"tasks_per_month": 1_000_000_000, "avg_minutes": 1440, "target_utilization": 1e-300},
    {"tasks_per_month": 1, "avg_minutes": 1e-300, "active_hours_per_day": 1e-300},
    {"tasks_per_month": 999_999_999, "avg_minutes": 1439.9, "peak_factor": 100},
]


@pytest.mark.parametrize("body", V1_HANGS)
def test_v1_hang_inputs_are_rejected_or_planned(client, body):
    r = client.post("/v1/plan", json=body)
    assert r.status_code in (200, 422)
    if r.status_code == 422:
        assert r.json()["error"]["field"]


# Numbers that broke v2 or sit on an edge: the smallest subnormal (issue 26's 500), the
# smallest normal, tiny and huge magnitudes, negative zero.
EDGE_NUMBERS = [5e-324, 1e-320, 2.2250738585072014e-308, 1e-300, -0.0, 1e-9, 1e300]


def _schema_strategy(spec: dict):
    """Request bodies drawn from POST /v1/plan's own OpenAPI schema.

    Half the bodies keep every property inside its bounds (so the planner itself runs),
    half also use values just outside them, wrong magnitudes, edge numbers (subnormals)
    and enum members.
    """
    import math

    from hypothesis import strategies as st

    props = spec["components"]["schemas"]["PlanInput"]["properties"]
    required = spec["components"]["schemas"]["PlanInput"].get("required", [])

    def for_prop(p: dict, strict: bool):
        options = p.get("anyOf", [p])
        strategies = []
        for o in options:
            t = o.get("type")
            lo = o.get("minimum", o.get("exclusiveMinimum"))
            hi = o.get("maximum", o.get("exclusiveMaximum"))
            if t == "integer":
                if strict:
                    a = int(lo) + ("exclusiveMinimum" in o) if lo is not None else 0
                    b = int(hi) - ("exclusiveMaximum" in o) if hi is not None else a + 10**6
                else:
                    a = int(lo) - 1 if lo is not None else -(10**12)
                    b = int(hi) + 1 if hi is not None else 10**12
                strategies.append(st.integers(a, max(a, b)))
            elif t == "number":
                a = float(lo) if lo is not None else (0.0 if strict else -1e12)
                b = float(hi) if hi is not None else (a + 1e6 if strict else 1e12)
                bounded = st.floats(
                    a,
                    b,
                    allow_nan=False,
                    exclude_min=strict and "exclusiveMinimum" in o,
                    exclude_max=strict and "exclusiveMaximum" in o,
                )
                edges = [a, b, math.nextafter(a, math.inf), math.nextafter(b, -math.inf)]
                bounded = bounded | st.sampled_from([x for x in edges if a <= x <= b])
                if not strict:
                    bounded = (
                        bounded
                        | st.floats(allow_nan=False, allow_infinity=False)
                        | st.sampled_from(EDGE_NUMBERS)
                    )
                strategies.append(bounded)
            elif t == "boolean":
                strategies.append(st.booleans())
            elif t == "string":
                if "enum" in o:
                    strategies.append(st.sampled_from(o["enum"]))
                elif not strict:
                    strategies.append(st.text(max_size=8))
            elif t == "null" and not strict:
                strategies.append(st.none())
        if "enum" in p:
            strategies.append(st.sampled_from(p["enum"]))
        if "default" in p and isinstance(p["default"], str):
            strategies.append(st.just(p["default"]))
        return st.one_of(*strategies) if strategies else st.none()

    def bodies(strict: bool):
        return st.fixed_dictionaries(
            {k: for_prop(v, strict) for k, v in props.items() if k in required},
            optional={k: for_prop(v, strict) for k, v in props.items() if k not in required},
        )

    return bodies(True) | bodies(False)


def _numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, float):
        yield x


def test_fuzz_plan_from_its_openapi_schema_never_5xx(client):
    """Schemathesis-style: bodies generated from the served OpenAPI schema. Every call
    answers 200 or 422 (naming a field), a 200 holds only finite numbers, and its plan
    stays within the work budget: bounded work, which is how the suite holds "no call
    over 2 s" without a wall-clock assertion (python -m bench.planner measures seconds)."""
    import math

    from hypothesis import HealthCheck, given, settings

    from app.planner.queueing import MAX_WORK_UNITS

    spec = client.get("/openapi.json").json()
    seen: list[int] = []

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(body=_schema_strategy(spec))
    def one(body):
        r = client.post("/v1/plan", json=body)
        seen.append(r.status_code)
        assert r.status_code in (200, 422), (body, r.text[:300])
        if r.status_code == 200:
            data = r.json()
            assert 0 < data["work_units"] <= MAX_WORK_UNITS
            assert all(math.isfinite(x) for x in _numbers(data)), body
        else:
            err = r.json()["error"]
            assert err["code"] == "invalid_request" and err.get("field"), (body, err)

    one()
    assert seen.count(200) >= 8, "the fuzzer should reach the planner, not only the validator"


def test_retired_and_legacy_models_warn_over_http(client):
    """Issue 27: a plan that picks a retired (or legacy) model says so in the API."""
    body = {"tasks_per_month": 100, "avg_minutes": 10}
    r = client.post("/v1/plan", json={**body, "bedrock_model": "claude-3.5-haiku"})
    assert r.status_code == 200
    assert any(
        "claude-3.5-haiku" in w and "retired" in w and "2026-06-19" in w
        for w in r.json()["warnings"]
    )
    r = client.post("/v1/plan", json={**body, "bedrock_model": "llama-3.1-8b"})
    assert any("llama-3.1-8b" in w and "legacy" in w for w in r.json()["warnings"])
    r = client.post("/v1/plan", json=body)
    assert not any("retired" in w or "legacy" in w for w in r.json()["warnings"])
