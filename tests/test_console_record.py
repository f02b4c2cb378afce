"""The console's "Record": headless Chromium with a fake microphone fed from a real
recording (Chromium's fake media stream flags), live captions, then the task's summary."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from app.speech.audio import decode
from tests.browser import CHROMIUM
from tests.browser import CHROMIUM_ARGS as _BASE_ARGS
from tests.conftest import DATA, make_key
from tests.test_console import _skip_reason, _wait_js


def _wav(path, seconds_of_pause: float = 2.0) -> None:
    """The JFK clip, then a pause (the fake microphone loops the file)."""
    pcm = decode((DATA / "jfk.flac").read_bytes())
    pcm = np.concatenate([pcm, np.zeros(int(seconds_of_pause * 16000), np.float32)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((pcm.clip(-1, 1) * 32767).astype("<i2").tobytes())


@pytest.mark.browser
def test_record_shows_live_captions_then_the_summary(service, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    key = make_key(service, "console-record")
    mic = tmp_path / "mic.wav"
    _wav(mic)
    args = [
        *_BASE_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_context().new_page()
            page.goto(f"{service.url}/console")
            page.wait_for_selector("#view-key:not([hidden])")
            page.get_by_label("API key", exact=True).fill(key)
            page.get_by_label("API key", exact=True).press("Enter")
            page.wait_for_selector("#view-tasks:not([hidden])")

            page.get_by_role("button", name="Record").click()
            # Captions come while the microphone still plays: settled words first.
            _wait_js(
                page,
                "document.querySelector('#captions').textContent.toLowerCase().includes('country')",
                timeout_s=120,
            )
            assert page.get_attribute("#record", "aria-pressed") == "true"
            assert page.locator("#captions li[data-completed=true]").count() >= 1
            page.get_by_role("button", name="Stop").click()

            # Stop opens the task the recording became; its summary arrives when it is done.
            _wait_js(page, "location.hash.startsWith('#/tasks/')", timeout_s=120)
            _wait_js(page, "document.querySelector('#summary-text').textContent.length > 20", 600)
            transcript = page.text_content("#segments").lower()
            assert "country" in transcript
        finally:
            browser.close()
