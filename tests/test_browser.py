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


def _start_server(db_url: str, **extra_env: str):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "METERING_DATABASE_URL": db_url, **extra_env}
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
    return proc, base


def _stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(demo_sqlite_url):
    env = {"METERING_AUTH": "local"}
    proc, base = _start_server(demo_sqlite_url, **env)
    yield base
    _stop_server(proc)


@pytest.fixture(scope="module")
def proxy_server(demo_sqlite_url):
    """The app behind a (simulated) sign-in proxy: the user comes in the X-Forwarded-Email header."""
    from queries.access import grant
    from queries.engine import make_engine

    eng = make_engine(demo_sqlite_url)
    grant(eng, ["acme-insurance"], "a@x", "acme-insurance", "viewer")
    eng.dispose()
    proc, base = _start_server(demo_sqlite_url, METERING_AUTH="proxy")
    yield base
    _stop_server(proc)


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
    page.goto(f"{server}/?org=acme-insurance&period=1999-99&env=staging%27%3B--")
    _wait_app(page, "ignored")
    body = page.inner_text("body")
    assert "unknown or not visible" in body
    assert "Traceback" not in body
    page.screenshot(path=str(SHOTS / "bad-link.png"), full_page=True)
    page.close()


def test_link_to_another_org_shows_no_access(proxy_server, browser, demo_sqlite_url, demo_period):
    """A viewer of acme-insurance (identified by the proxy header) opens a link to borealis-health."""
    closed = _closed(demo_period)
    b = json.loads(_cli(demo_sqlite_url, "invoice", "--org", "borealis-health", "--period", closed,
                        "--json").stdout)
    b_total = f"{b['total']:,.2f}"
    ctx = browser.new_context(viewport={"width": 1280, "height": 800},
                              extra_http_headers={"X-Forwarded-Email": "a@x"})
    page = ctx.new_page()
    for path in ("", "invoice", "projects"):
        page.goto(f"{proxy_server}/{path}?org=borealis-health&period={closed}")
        _wait_app(page, "No access")
        body = page.inner_text("body")
        assert "borealis-sandbox" not in body and "clinical-credentialing" not in body
        assert b_total not in body and "Traceback" not in body
        if not path:
            page.screenshot(path=str(SHOTS / "no_access.png"), full_page=True)
    # control: the same user's own org renders, with its numbers
    page.goto(f"{proxy_server}/?org=acme-insurance&period={closed}")
    _wait_app(page, "Invoice total")
    assert "acme-insurance" in page.inner_text("body")
    ctx.close()

    # no header (not through the proxy): nothing but "Not signed in"
    anon = browser.new_page()
    anon.goto(f"{proxy_server}/?org=acme-insurance")
    _wait_app(anon, "Not signed in")
    assert "acme-insurance" not in anon.inner_text("body")
    anon.close()


def _closed(period: str) -> str:
    from metering.periods import shift_period

    return shift_period(period, -1)
