"""/docs and /redoc render from our own origin, offline, under a CSP (issue 30).

The real app under uvicorn on loopback (no Ray: the docs need no model), and the
system Chromium driven by Playwright, recording every request the pages make.
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from app.core.settings import Settings
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.servers import free_port


async def no_models() -> dict:
    """Stands in for Pipeline.ready(): the docs never ask the models."""
    raise ConnectionError("no Serve application here")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    import uvicorn

    from app.api.main import create_app
    from app.tasks.pipeline import Pipeline

    settings = Settings(data_dir=tmp_path_factory.mktemp("docs") / "data", redis_url=None)
    app = create_app(
        Pipeline(None, None), TaskDoor.from_settings(settings, ModelRegistry(no_models))
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_only_our_own_assets(base_url, path):
    page = httpx.get(base_url + path, timeout=10)
    assert page.status_code == 200
    html = page.text
    assert "cdn." not in html and "https://" not in html
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        if asset in html:
            got = httpx.get(f"{base_url}/docs/assets/{asset}", timeout=10)
            assert got.status_code == 200 and len(got.content) > 100_000
    assert httpx.get(f"{base_url}/docs/assets/../core.py", timeout=10).status_code == 404


def _skip_without_browser() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium`")
    pytest.importorskip("playwright.sync_api")


@pytest.mark.browser
def test_docs_render_offline_with_no_third_party_request(base_url):
    _skip_without_browser()
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    violations: list[str] = []
    left: list[str] = []  # requests that got past the page's CSP towards another host

    def only_ours(route):
        if route.request.url.startswith(base_url):
            return route.continue_()
        left.append(route.request.url)
        return route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(offline=False)
            # Anything not on our origin fails, as it would on a machine without network.
            context.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith(base_url) else route.abort()
                ),
            )
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(base_url + "/docs")
            page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
            assert page.locator(".opblock").count() > 20  # every route is listed
            page.goto(base_url + "/redoc")
            page.wait_for_selector("text=AI Processing Platform", timeout=30_000)
            page.wait_for_selector("[role=menuitem], li[data-item-id]", timeout=30_000)
        finally:
            browser.close()
    assert not left, left  # nothing got past the CSP towards another host
    # ReDoc's footer logo is the one outside resource it asks for; the CSP blocks it.
    assert all("Loading the image" in v for v in violations), violations
    scripts = [u for u in requests if u.endswith(".js")]
    assert scripts and all(u.startswith(base_url) for u in scripts), scripts
