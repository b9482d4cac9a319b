"""Browser pieces of the dashboard tests: Debian Chromium through Playwright, log-in, screenshots.

Chromium comes from Debian (``deploy/labelstudio/ls.sh chromium`` installs it when missing and we are
root); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench.harness.labelstudio import LS_SCRIPT

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
PASSWORD = "a-long-browser-password"


@pytest.fixture(scope="module")
def browser():
    subprocess.run(["bash", str(LS_SCRIPT), "chromium"], check=True, timeout=900)
    # Playwright's sync API runs an event loop in this thread; the tests' ORM calls stay synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def new_page(browser, *, width: int = 1280, height: int = 900):
    """A fresh context (own cookies); uncaught script errors and Content-Security-Policy violations (the
    browser's console report of a blocked script, style, image or frame) are collected on ``page.js_errors``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: page.js_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return page


def log_in(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("load")


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
