"""Headless Chromium as the browser tests start it (the system browser, driven by Playwright)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# No background networking: this machine's network is closed, and the browser must
# only ever talk to the service under test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
