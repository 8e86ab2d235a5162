"""A real browser: Debian's headless Chromium driven by Playwright opens shared links.

Starts `streamlit run app.py` on a free loopback port against a small demo database, opens a
link with filters, checks the KPI text against the CLI's number, changes a filter and checks the
URL follows, and saves a screenshot of every page to docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
PAGES = {
    "home": "",
    "lanes": "lanes",
    "projects": "projects",
    "keys": "keys",
    "forecast": "forecast",
    "invoice": "invoice",
    "data": "data",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "metering", "--database-url", db_url, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def server(demo_sqlite_url):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "METERING_DATABASE_URL": demo_sqlite_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("streamlit did not start: " + proc.stdout.read().decode()[-2000:])
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is required (scripts/ensure_chromium.sh)"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


def _wait_app(page, text: str, timeout: float = 45_000):
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)
    # wait until the script run is over (no running indicator, no stale elements), then let
    # charts and data grids paint
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
              && !document.querySelector('[data-stale="true"]')""", timeout=timeout)
    page.wait_for_timeout(2500)


def test_shared_link_opens_same_view_and_filters_follow_url(server, browser, demo_sqlite_url, demo_period):
    SHOTS.mkdir(parents=True, exist_ok=True)
    inv = json.loads(_cli(demo_sqlite_url, "invoice", "--org", "acme-insurance",
                          "--period", demo_period, "--json").stdout)
    total = inv["total"]
    expected = f"${total:,.2f}"

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(f"{server}/?org=acme-insurance&period={demo_period}")
    _wait_app(page, "Month-to-date")
    body = page.inner_text("body")
    assert "acme-insurance" in body
    assert expected in body, f"KPI {expected} not on the page"
    page.screenshot(path=str(SHOTS / "home.png"), full_page=True)

    # change a filter: environments -> production; the URL must follow
    page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect").nth(1).click()
    page.get_by_role("option", name="production").first.click()
    page.keyboard.press("Escape")
    page.wait_for_url("**env=production**", timeout=15_000)
    assert "org=acme-insurance" in page.url

    # a fresh browser context opening the copied link sees the same filter
    copied = page.url
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    p2 = ctx.new_page()
    p2.goto(copied)
    _wait_app(p2, "Month-to-date")
    assert "production" in p2.get_by_test_id("stSidebar").inner_text()
    ctx.close()

    for name, path in PAGES.items():
        if not path:
            continue
        page.goto(f"{server}/{path}?org=acme-insurance&period={demo_period}")
        _wait_app(page, "acme-insurance")
        assert "Traceback" not in page.inner_text("body")
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.close()


def test_bad_link_warns_and_falls_back(server, browser, demo_period):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server}/?org=not-an-org%27%3B--&period=1999-99")
    _wait_app(page, "ignored")
    body = page.inner_text("body")
    assert "unknown or not visible" in body
    assert "Traceback" not in body
    page.screenshot(path=str(SHOTS / "bad-link.png"), full_page=True)
    page.close()
