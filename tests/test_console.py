"""The web console (issue 17) and the two API routes it brought: search and task audio.

- Search index on SQLite (FTS5) and PostgreSQL (tsvector), straight on the store.
- ``/v1/search`` and ``/v1/tasks/{id}/audio`` on the running service: tenant scoping,
  Range requests.
- The console itself in headless Chromium against the running service (auth on):
  key prompt, upload of ``tests/data/jfk.flac`` with progress, live status through
  SSE to ``succeeded``, the result page (click a segment, the player seeks), SRT
  download, search, delete; screenshots under ``tests/artifacts/``.

The browser part needs Debian's Chromium at /usr/bin/chromium and the ``playwright``
package (as tests/test_planner_page.py); it is skipped, saying how to install, without.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.storage.sql import keys, search
from app.storage.sql.engine import make_engine
from app.storage.sql.migrate import upgrade
from app.storage.sql.models import TaskStatus
from app.storage.sql.tasks import TaskStore
from tests.browser import CHROMIUM
from tests.browser import CHROMIUM_ARGS as _BASE_ARGS
from tests.conftest import JFK_PHRASE, make_key
from tests.servers import LocalHTTPServer
from tests.transcript_fixtures import to_vtt_file, turns

CHROMIUM_ARGS = [*_BASE_ARGS, "--autoplay-policy=no-user-gesture-required"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _result(*texts: str, start: float = 0.0) -> dict:
    segments = []
    t = start
    for i, text in enumerate(texts):
        segments.append({"id": i, "start": t, "end": t + 4.0, "text": text})
        t += 4.0
    return {
        "transcript": {
            "text": " ".join(texts),
            "language": "en",
            "duration_s": t,
            "segments": segments,
        },
        "summary": {"summary": "s", "key_points": [], "action_items": []},
    }


# --- the index, on both backends ------------------------------------------------------


def test_search_is_per_tenant_ranked_and_safe(engine):
    store = TaskStore(engine)
    acme = keys.ensure_tenant(engine, "acme")
    other = keys.ensure_tenant(engine, "other")
    budget = store.create_finished(
        tenant_id=acme.id,
        result=_result("We agreed on the budget.", "The budget review is on Friday, budget!"),
        audio_filename="budget.flac",
    )
    store.create_finished(
        tenant_id=acme.id, result=_result("Lunch plans for Thursday."), audio_filename="lunch.wav"
    )
    store.create_finished(
        tenant_id=other.id, result=_result("Their budget is secret."), audio_filename="x.wav"
    )

    hits = search.search(engine, acme.id, "budget")
    assert {h.task_id for h in hits} == {budget.id}
    assert [h.segment for h in hits] == [1, 0]  # more occurrences rank first
    assert hits[0].start == 4.0 and hits[0].filename == "budget.flac"
    assert "Friday" in hits[0].text

    # Every word must occur; the last one may be a prefix (search as you type).
    assert [h.segment for h in search.search(engine, acme.id, "review fri")] == [1]
    assert search.search(engine, acme.id, "budget lunch") == []
    assert [h.filename for h in search.search(engine, acme.id, "THURS")] == ["lunch.wav"]

    # The other tenant sees only its own transcript.
    assert [h.text for h in search.search(engine, other.id, "budget")] == [
        "Their budget is secret."
    ]
    # Query syntax of either backend is just text here.
    for hostile in ['budget" OR "lunch', "budget & !lunch", "budget:*", "NEAR(budget lunch)"]:
        found = {h.task_id for h in search.search(engine, acme.id, hostile)}
        assert found <= {budget.id}
    with pytest.raises(search.EmptyQuery):
        search.search(engine, acme.id, ' "*&! ')


def test_index_follows_the_task_lifecycle(engine):
    store = TaskStore(engine)
    tenant = keys.ensure_tenant(engine, "acme")
    task = store.create(tenant_id=tenant.id, audio_uri="memory://x", audio_filename="a.wav")
    assert search.search(engine, tenant.id, "quarterly") == []  # queued: nothing indexed
    claimed = store.claim_next("w1", lease_s=30)
    assert claimed is not None and claimed.id == task.id
    store.succeed(task.id, "w1", _result("The quarterly numbers look fine."))
    assert [h.task_id for h in search.search(engine, tenant.id, "quarterly")] == [task.id]

    # Indexing again replaces the rows instead of duplicating them.
    done = store.get(task.id)
    assert search.index_transcript(engine, done) == 1
    assert search.reindex(engine) == 1
    assert len(search.search(engine, tenant.id, "quarterly")) == 1

    failed = store.create_finished(
        tenant_id=tenant.id,
        result=_result("quarterly but failed"),
        status=TaskStatus.FAILED,
        error_code="x",
        error_message="x",
    )
    assert failed.id not in {h.task_id for h in search.search(engine, tenant.id, "quarterly")}

    assert store.delete(task.id, tenant.id)
    assert search.search(engine, tenant.id, "quarterly") == []
    with engine.connect() as conn:
        left = conn.execute(sa.text(f"SELECT count(*) FROM {search.TABLE}")).scalar_one()
    assert left == 0


def test_migration_0003_indexes_existing_transcripts(database_url):
    upgrade(database_url, "0002")
    eng = make_engine(database_url)
    try:
        tenant = keys.ensure_tenant(eng, "acme")
        # Before 0003 there is no index: the task still succeeds (indexing is best effort).
        old = TaskStore(eng).create_finished(
            tenant_id=tenant.id, result=_result("Recorded before search existed.")
        )
        upgrade(database_url)
        assert [h.task_id for h in search.search(eng, tenant.id, "existed")] == [old.id]
    finally:
        eng.dispose()


# --- the console in a browser ------------------------------------------------------------


def _skip_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return (
            f"no Chromium at {CHROMIUM}: install it with "
            "`apt-get update && apt-get install -y chromium` (and `pip install playwright`)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: `pip install playwright`"
    return None


def _wait_js(page, expression: str, timeout_s: float = 60) -> None:
    """Poll ``expression`` until truthy. (``page.wait_for_function`` evaluates its
    predicate with ``eval``, which the console's Content-Security-Policy forbids.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            shown = page.evaluate("document.body.innerText").replace("\n", " | ")[:1500]
            where = page.evaluate("location.hash")
            pytest.fail(f"still false after {timeout_s} s: {expression}\nat {where}: {shown}")
        page.wait_for_timeout(50)


UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, textarea, select, button')]
  .filter((el) => el.offsetParent !== null)
  .filter((el) => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                    || (el.tagName === 'BUTTON' && el.textContent.trim())))
  .map((el) => el.outerHTML)"""


@pytest.mark.browser
def test_console_upload_watch_read_search_delete(service, api_key, data_dir, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    base = service.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            viewport = {"width": 1280, "height": 900}
            ctx = browser.new_context(viewport=viewport, accept_downloads=True)
            page = ctx.new_page()
            remote: list[str] = []
            streams: list[str] = []
            page.on(
                "request",
                lambda req: (
                    remote.append(req.url)
                    if not req.url.startswith((base, "data:", "blob:"))
                    else streams.append(req.url)
                    if req.url.endswith("/events")
                    else None
                ),
            )
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{base}/console")

            # Auth is on: the key prompt first; a wrong key is refused and named.
            page.wait_for_selector("#view-key:not([hidden])")
            page.get_by_label("API key", exact=True).fill("aipp_not_a_key")
            page.get_by_role("button", name="Use this key").click()
            _wait_js(page, "document.querySelector('#key-error').textContent !== ''")
            assert "invalid" in page.text_content("#key-error")
            page.get_by_label("API key", exact=True).fill(api_key)
            page.get_by_label("API key", exact=True).press("Enter")  # keyboard submit
            page.wait_for_selector("#view-tasks:not([hidden])")
            assert page.evaluate("sessionStorage.getItem('aipp.apiKey')") == api_key
            assert page.evaluate("localStorage.length") == 0
            assert page.evaluate(UNLABELLED_CONTROLS) == []

            # Upload with progress, then live status from the SSE stream to succeeded.
            page.set_input_files("#files", str(data_dir / "jfk.flac"))
            assert "jfk.flac" in page.text_content("#drop-hint")
            page.get_by_role("button", name="Submit").click()
            page.wait_for_selector(".upload-item progress")
            page.wait_for_selector(".upload-item[data-task-id]")
            task_id = page.get_attribute(".upload-item[data-task-id]", "data-task-id")
            row = f"#task-{task_id}"
            page.wait_for_selector(f"{row}[data-status=succeeded]", timeout=600_000)
            assert page.get_attribute(row, "data-live") == "sse"
            assert "status:succeeded" in page.get_attribute(row, "data-events")
            assert any(f"/v1/tasks/{task_id}/events" in u for u in streams)
            assert page.text_content(f"{row} .task-name") == "jfk.flac"
            assert page.text_content(f"{row} .badge") == "succeeded"
            assert "null" not in page.text_content(row)

            # A second, longer upload: its stage and percent show live; then cancel it.
            page.set_input_files("#files", str(data_dir / "multilingual.mp3"))
            page.get_by_role("button", name="Submit").click()
            second = f".upload-item[data-task-id]:not([data-task-id='{task_id}'])"
            page.wait_for_selector(second)
            other = page.get_attribute(second, "data-task-id")
            other_row = f"#task-{other}"
            page.wait_for_selector(
                f"{other_row}[data-status=transcribing] progress, "
                f"{other_row}[data-status=summarizing] progress",
                timeout=300_000,
            )
            assert "%" in page.text_content(f"{other_row} .stage")
            page.screenshot(path=str(ARTIFACTS / "console-tasks-desktop.png"), full_page=True)
            page.get_by_role("button", name="Cancel multilingual.mp3").click()
            page.wait_for_selector(f"{other_row}[data-status=cancelled]", timeout=120_000)
            assert "status:cancelled" in page.get_attribute(other_row, "data-events")
            page.get_by_role("button", name="Delete multilingual.mp3").click()
            page.wait_for_selector(other_row, state="detached")

            # A pasted audio URL (a real HTTP server on loopback, which the service allows).
            audio = (data_dir / "jfk.flac").read_bytes()
            with LocalHTTPServer(lambda req: (200, {"Content-Type": "audio/flac"}, audio)) as web:
                page.get_by_label("…or an audio URL").fill(f"{web.url}/speech.flac")
                page.get_by_role("button", name="Submit").click()
                url_row = "li.task[data-status=succeeded]:has(a.task-name:has-text('speech.flac'))"
                page.wait_for_selector(url_row, timeout=300_000)
            assert web.requests and web.requests[0].path == "/speech.flac"
            page.locator(url_row).get_by_role("button", name="Delete").click()
            page.wait_for_selector(url_row, state="detached")

            # A transcript the user already has (a meeting tool's WebVTT export of a real
            # call): summarized with its speakers' names, and no player (there is no audio).
            vtt = to_vtt_file(turns(240), tmp_path / "standup.vtt")
            page.set_input_files("#files", str(vtt))
            page.get_by_role("button", name="Submit").click()
            vtt_row = "li.task[data-status=succeeded]:has(a.task-name:has-text('standup.vtt'))"
            page.wait_for_selector(vtt_row, timeout=600_000)
            page.locator(vtt_row).locator("a.task-name").click()
            page.wait_for_selector("body[data-result=ready]")
            assert page.locator("#speakers li", has_text="Chris").count() == 1
            assert page.locator("button.seg .speaker", has_text="Orie").count() >= 1
            assert page.locator("#player").is_hidden()
            assert page.text_content("#summary-text").strip()
            page.get_by_role("link", name="← All tasks").click()
            page.locator(vtt_row).get_by_role("button", name="Delete").click()
            page.wait_for_selector(vtt_row, state="detached")

            # The result page: the player seeks to the segment that is clicked.
            page.click(f"{row} .task-name")
            page.wait_for_selector("body[data-result=ready][data-audio=ready]")
            spoken = page.eval_on_selector_all(
                "button.seg .text", "els => els.map(e => e.textContent).join(' ')"
            )
            assert JFK_PHRASE in spoken.lower()
            segs = page.eval_on_selector_all(
                "button.seg",
                "els => els.map(e => [Number(e.dataset.start), Number(e.dataset.end)])",
            )
            duration = page.evaluate("document.querySelector('#player').duration")
            index = max(i for i, (start, _) in enumerate(segs) if start < duration - 1.5)
            target = segs[index][0]
            page.evaluate(f"document.querySelector('#player').currentTime = {duration - 0.3}")
            _wait_js(
                page, f"Math.abs(document.querySelector('#player').currentTime - {target}) > 1"
            )
            page.locator("button.seg").nth(index).click()
            _wait_js(
                page, f"Math.abs(document.querySelector('#player').currentTime - {target}) < 1"
            )
            assert page.locator("button.seg").nth(index).get_attribute("aria-current") == "true"
            # And from the keyboard: Enter on the first segment goes back to its start.
            page.locator("button.seg").first.focus()
            page.keyboard.press("Enter")
            _wait_js(page, f"document.querySelector('#player').currentTime < {segs[0][1]}")
            assert page.evaluate(UNLABELLED_CONTROLS) == []
            page.evaluate("document.querySelector('#player').pause()")
            page.screenshot(path=str(ARTIFACTS / "console-result-desktop.png"), full_page=True)

            # Download as SRT.
            with page.expect_download() as info:
                page.get_by_role("button", name="SRT").click()
            download = info.value
            assert download.suggested_filename == "jfk.srt"
            srt = Path(download.path()).read_text()
            assert "00:00:00,000 -->" in srt and "country" in srt.lower()

            # Search for a word of the transcript; the hit links to its place in the audio.
            page.get_by_label("Search your transcripts", exact=True).fill("countr")
            page.get_by_label("Search your transcripts", exact=True).press("Enter")
            page.wait_for_selector(f".hit-group[data-task-id='{task_id}'] .hit mark")
            hit = page.locator(f".hit-group[data-task-id='{task_id}'] .hit").first
            assert "country" in hit.text_content().lower()
            page.screenshot(path=str(ARTIFACTS / "console-search-desktop.png"), full_page=True)
            hit.click()
            page.wait_for_selector("body[data-audio=ready] button.seg[aria-current=true]")
            assert "country" in page.text_content("button.seg[aria-current=true]").lower()

            # Phones: 390 px wide, nothing wider than the screen.
            page.set_viewport_size({"width": 390, "height": 844})
            page.evaluate("document.querySelector('#player').pause()")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "console-result-phone.png"), full_page=True)
            page.get_by_role("link", name="← All tasks").click()
            page.wait_for_selector(f"#view-tasks:not([hidden]) {row}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "console-tasks-phone.png"), full_page=True)

            # Links for people and operators.
            assert page.get_attribute("nav a[href='/planner']", "href") == "/planner"
            dash = page.get_attribute("#dashboard-link", "href")
            assert dash.endswith(f":{service.dashboard_port}/")

            # Delete from the result page: gone from the list and from the API.
            page.click(f"{row} .task-name")
            page.wait_for_selector("body[data-result=ready]")
            page.get_by_role("button", name="Delete").click()
            # Back on the list once the DELETE is answered (a DOM check: the list may be
            # empty, and an empty view has nothing for a visibility wait to see).
            back = "location.hash === '#/' && !document.getElementById('view-tasks').hidden"
            _wait_js(page, back)
            page.wait_for_selector(row, state="detached")
            r = httpx.get(
                f"{base}/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {api_key}"}
            )
            assert r.status_code == 404

            # Forgetting the key clears what was shown and asks again.
            page.get_by_role("button", name="Forget key").click()
            page.wait_for_selector("#view-key:not([hidden])")
            assert page.evaluate("sessionStorage.getItem('aipp.apiKey')") is None
            assert page.locator("li.task").count() == 0
            assert remote == []
        finally:
            browser.close()


# --- the API on the running service ---------------------------------------------------


def _submit_and_wait(service, key: str, audio: Path) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=60) as client:
        r = client.post("/v1/tasks", files={"file": (audio.name, audio.read_bytes(), "audio/flac")})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        with client.stream("GET", f"/v1/tasks/{task_id}/events", timeout=600) as events:
            for line in events.iter_lines():
                if line.startswith("data:") and '"succeeded"' in line:
                    break
        task = client.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "succeeded", task
    return task


def test_search_and_audio_routes_are_tenant_scoped(service, api_key, data_dir):
    audio = data_dir / "jfk.flac"
    task = _submit_and_wait(service, api_key, audio)
    mine = {"Authorization": f"Bearer {api_key}"}
    theirs = {"Authorization": f"Bearer {make_key(service, 'console-other')}"}
    with httpx.Client(base_url=service.url, timeout=60) as client:
        r = client.get("/v1/search", params={"q": "COUNTRY"}, headers=mine)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["terms"] == ["country"]
        hit = next(h for h in body["data"] if h["task_id"] == task["id"])
        assert "country" in hit["text"].lower() and hit["filename"] == "jfk.flac"
        segment = task["result"]["transcript"]["segments"][hit["segment"]]
        assert segment["start"] == pytest.approx(hit["start"])

        assert (
            client.get("/v1/search", params={"q": "country"}, headers=theirs).json()["data"] == []
        )
        r = client.get("/v1/search", params={"q": "?!"}, headers=mine)
        assert r.status_code == 422 and r.json()["error"]["code"] == "empty_query"
        assert client.get("/v1/search", params={"q": "country"}).status_code == 401

        url = f"/v1/tasks/{task['id']}/audio"
        r = client.get(url, headers=mine)
        assert r.status_code == 200 and r.content == audio.read_bytes()
        assert r.headers["content-type"] == "audio/flac"
        assert r.headers["accept-ranges"] == "bytes"
        r = client.get(url, headers={**mine, "Range": "bytes=4-11"})
        assert r.status_code == 206 and r.content == audio.read_bytes()[4:12]
        assert r.headers["content-range"] == f"bytes 4-11/{audio.stat().st_size}"
        r = client.get(url, headers={**mine, "Range": "bytes=-4"})
        assert r.status_code == 206 and r.content == audio.read_bytes()[-4:]
        r = client.get(url, headers={**mine, "Range": f"bytes={10**9}-"})
        assert r.status_code == 416 and r.json()["error"]["code"] == "range_not_satisfiable"
        r = client.get(url, headers=theirs)
        assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
        assert client.get(url).status_code == 401

        # The pages need no key (they hold no data); the config says auth is on.
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/console"
        page = client.get("/console")
        assert (
            page.status_code == 200
            and "script-src 'self'" in page.headers["content-security-policy"]
        )
        assert client.get("/console/config.json").json()["auth_required"] is True
        assert client.get("/console/static/../routes.py").status_code == 404
