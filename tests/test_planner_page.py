"""The /planner page in headless Chromium: load, change inputs, see numbers and chart change.

Needs Debian's Chromium at /usr/bin/chromium and the ``playwright`` Python package
(its own browser download is not used). Skipped, with how to install, where either
is missing. A screenshot is saved under tests/artifacts/.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from app.api.errors import install_error_handlers
from app.api.routes_planner import _load, page_router, router
from tests.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _skip_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return (
            f"no Chromium at {CHROMIUM}: install it with "
            "`apt-get update && apt-get install -y chromium` (and `pip install playwright`)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "the playwright Python package is missing: `pip install playwright` "
            "(Chromium itself comes from `apt-get install chromium`)"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    os.environ.pop("AIPP_PLANNER_CATALOG", None)
    _load.cache_clear()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(page_router)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):  # wait for the socket; not a timing assertion
        if server.started or not thread.is_alive():
            break
        time.sleep(0.025)
    if not server.started:
        pytest.fail("uvicorn did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def _money(text: str) -> float:
    m = re.search(r"\$([\d,]+(?:\.\d+)?)", text)
    assert m, text
    return float(m.group(1).replace(",", ""))


def _wait_plan(page, after: int, state: str = "ok") -> int:
    page.wait_for_function(
        "([after, state]) => Number(document.body.dataset.planSeq) > after"
        " && document.body.dataset.state === state",
        arg=[after, state],
    )
    return int(page.get_attribute("body", "data-plan-seq"))


def test_planner_page_updates_results_and_chart(base_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            remote: list[str] = []
            page.on(
                "request",
                lambda req: (
                    remote.append(req.url)
                    if not req.url.startswith(base_url) and not req.url.startswith("data:")
                    else None
                ),
            )
            page.goto(f"{base_url}/planner")
            seq = _wait_plan(page, 0)

            # The page opens on the seed example: 1 + 1 GPUs, $2,419 vs $4,350 (Transcribe).
            assert page.input_value("#tasks_per_month") == "8000"
            assert page.text_content("#out-stt-gpus") == "1"
            assert page.text_content("#out-llm-gpus") == "1"
            self_1 = _money(page.text_content("#out-self"))
            managed_1 = _money(page.text_content("#out-managed"))
            assert self_1 == pytest.approx(2419, abs=1)
            assert managed_1 == pytest.approx(4350, abs=1)
            # the headline: where self-hosting stays cheaper than every like-for-like
            # option, with every window before it; the chosen baseline's crossover below
            assert "242,231" in page.text_content("#out-crossover")
            ranges = page.text_content("#out-ranges")
            assert "164,346" in ranges and "242,231+" in ranges
            assert "4,397" in page.text_content("#out-savings")
            # latency target, predicted waits per pool, the band and the plain verdict
            assert page.input_value("#p95_minutes") == "15"
            latency = page.text_content("#out-latency")
            assert "Target p95 15 min" in latency and "meets the target" in latency
            assert page.locator("#pools tr[data-pool]").count() == 2
            stt_p95 = page.text_content('#pools tr[data-pool="stt"] [data-testid="wait-p95"]')
            assert stt_p95.endswith(" s") or stt_p95.endswith(" min")
            band = page.text_content("#out-band")
            assert "cheapest like-for-like option from 42,892 to never" in band
            assert page.locator('[data-testid="band-area"]').count() == 1
            assert page.locator('[data-series="cheapest-managed"]').count() == 1
            assert page.locator('[data-testid="cheaper-range"]').count() >= 1
            assert "cheaper than self-hosting" in page.text_content("#out-verdict")
            assert page.locator("#baselines tr").count() == 9  # 8 like-for-like + header
            assert page.locator("#baselines-wait tr").count() == 9  # Bedrock batch apart
            assert page.is_visible("#baselines-wait")
            # prices last checked more than six months ago are named, with their dates
            assert "aws-ec2-on-demand (2025-07-01)" in page.text_content("#warnings")
            assert page.locator('[data-testid="crossover-marker"]').count() == 1
            path_1 = page.get_attribute('[data-series="managed"]', "d")
            self_path_1 = page.get_attribute('[data-series="self-hosted"]', "d")
            assert "deployments:" in page.text_content("#advice")

            # Change the volume: more GPUs, higher costs, a redrawn chart; no reload.
            page.evaluate("window.__same_document = true")
            page.fill("#tasks_per_month", "60000")
            seq = _wait_plan(page, seq)
            assert page.evaluate("window.__same_document") is True
            assert int(page.text_content("#out-stt-gpus")) > 1
            assert _money(page.text_content("#out-managed")) > managed_1
            assert _money(page.text_content("#out-self")) > self_1
            assert page.get_attribute('[data-series="managed"]', "d") != path_1
            # the axis now spans the cheapest baseline's crossover, so the self-hosted
            # line (more GPUs at 60,000) changes while the crossover line may stay put
            assert page.get_attribute('[data-series="self-hosted"]', "d") != self_path_1

            # An invalid value: the API's 422 names the field; the message sits next to it.
            page.fill("#tasks_per_month", "-5")
            seq = _wait_plan(page, seq, "error")
            err = page.text_content("#err-tasks_per_month")
            assert "tasks_per_month" in err and "greater than 0" in err
            assert page.get_attribute("#tasks_per_month", "aria-invalid") == "true"
            assert page.text_content("#err-avg_minutes") == ""

            # Fix it; the message goes away. Then pick another GPU from the list.
            page.fill("#tasks_per_month", "8000")
            seq = _wait_plan(page, seq)
            assert page.text_content("#err-tasks_per_month") == ""
            assert page.get_attribute("#tasks_per_month", "aria-invalid") is None
            page.select_option("#gpu", "L40S")
            seq = _wait_plan(page, seq)
            assert "L40S" in page.text_content("#out-layout")
            assert "g6e.xlarge" in page.text_content("#out-self-task")

            # A tighter latency target changes the target line; a retired model warns.
            page.fill("#p95_minutes", "3")
            seq = _wait_plan(page, seq)
            assert "Target p95 3 min" in page.text_content("#out-latency")
            page.select_option("#bedrock_model", "claude-3-haiku")
            seq = _wait_plan(page, seq)
            assert "retired" in page.text_content("#warnings")
            page.check("#diarize")
            seq = _wait_plan(page, seq)
            assert page.locator('#pools tr[data-pool="diarizer"]').count() == 1

            page.screenshot(path=str(ARTIFACTS / "planner.png"), full_page=True)
            assert (ARTIFACTS / "planner.png").stat().st_size > 10_000
            assert remote == []  # the page loads nothing from outside this server
        finally:
            browser.close()
