"""Keeps bench/load_test.py working: its protocol client against a real server, a short 2-session run.

The full 20-session measurement lives in docs/performance.md ("## Load test (20 sessions)"); here
only correctness of the machinery is checked, never speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.load_test import (
    PAGES,
    SECTION,
    ProtocolSession,
    Server,
    percentile,
    report,
    run,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent


def test_percentile_nearest_rank_by_hand():
    # the textbook nearest-rank example: ranks ceil(p/100 * 5)
    v = [15, 20, 35, 40, 50]
    assert [percentile(v, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert percentile(list(range(1, 21)), 95) == 19  # ceil(0.95 * 20) = 19th value
    assert percentile([7.5], 50) == 7.5


def test_write_section_replaces_only_its_section(tmp_path):
    doc = tmp_path / "performance.md"
    before = "# Performance\n\n## Suite\n\nsuite text\n\n"
    after = "## Ingest\n\ningest text\n"
    doc.write_text(before + after)
    write_section("first body", doc)  # absent: appended at the end
    assert doc.read_text() == before + after + f"\n{SECTION}\n\nfirst body\n"
    # present in the middle: replaced, the neighbours byte-identical
    doc.write_text(before + f"{SECTION}\n\nold body\nmore\n\n" + after)
    write_section("new body", doc)
    assert doc.read_text() == before + f"{SECTION}\n\nnew body\n\n" + after


def test_protocol_client_sees_the_cli_invoice_total_and_every_page(demo_sqlite_url, demo_period, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "metering", "--database-url", demo_sqlite_url, "invoice", "--org",
         "acme-insurance", "--period", demo_period, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    expected = f"${json.loads(out)['total']:,.2f}"

    server = Server(demo_sqlite_url, ROOT, tmp_path)
    server.start()

    async def walk():
        s = ProtocolSession(server.base)
        try:
            await s.open("", f"org=acme-insurance&period={demo_period}")
            home_texts = list(s.texts)
            widgets = dict(s.widgets)
            ran = []
            for path in PAGES.values():
                if path:
                    await s.switch_page(path)
                    ran.append(s.page_path)
            await s.change_filter("env", ["production"])
            return home_texts, widgets, ran, dict(s.query)
        finally:
            await s.close()

    try:
        texts, widgets, ran, query = asyncio.run(walk())
    finally:
        server.stop()
    assert expected in texts, f"KPI {expected} not delivered to the protocol client"
    assert {"org", "period", "vs", "project", "env", "workload"} <= set(widgets)
    assert ran == [p for p in PAGES.values() if p]
    # the server echoes the changed filter into the URL, the shared link keeps org and period
    assert query["env"] == ["production"]
    assert query["org"] == ["acme-insurance"] and query["period"] == [demo_period]


def test_two_sessions_five_seconds_complete_without_errors(demo_sqlite_url):
    lr = run(sessions=2, seconds=5, thinks=(0.2,), database_url=demo_sqlite_url, browser_pages=0)
    assert len(lr.phases) == 1 and not lr.cross
    r = lr.phases[0]
    assert r.samples, "no request was recorded"
    assert not r.failures, [s.error for s in r.failures]
    actions = Counter(s.action for s in r.samples)
    assert actions["open"] >= 2  # each session starts by opening a shared link
    assert actions["filter"] + actions["switch"] >= 2
    assert {s.session for s in r.samples} == {0, 1}
    for s in r.samples:
        assert s.page in PAGES
        assert s.messages > 0 and s.bytes > 0
        # the server's part (rerun sent -> finished) is inside the user's time
        assert s.run_ms is not None and 0 < s.run_ms <= s.ms
    assert r.wall >= 5
    assert len(r.mem) >= 8  # every 0.5 s over >= 5 s, plus the final sample
    assert all(kib > 10_000 for _, kib, _ in r.mem)  # a Streamlit server is well over 10 MiB
    # VmHWM is the kernel's high-water mark, updated lazily (it can sit a little below a sampled
    # VmRSS peak after allocator frees), so only its order of magnitude is checked
    assert lr.hwm_kib > 10_000
    # the server's CPU counter never goes back and the runs cost it CPU
    assert all(b[2] >= a[2] for a, b in zip(r.mem, r.mem[1:], strict=False))
    assert r.server_cpu > 0
    text = report(lr)
    assert f"{len(r.samples)} requests, **0 failed**" in text


def test_chromium_crosscheck_one_tab(demo_sqlite_url, demo_period, tmp_path):
    """The cross-check machinery: a real Chromium tab and a protocol session walk every page."""
    from bench.load_test import Links, cross_report, crosscheck

    server = Server(demo_sqlite_url, ROOT, tmp_path)
    server.start()
    try:
        links = Links(orgs=["acme-insurance"], periods=[demo_period], envs=[])
        cross = asyncio.run(crosscheck(server.base, 1, links, rounds=1))
    finally:
        server.stop()
    for side in ("browser", "protocol"):
        samples = cross[side]
        assert not [s.error for s in samples if not s.ok]
        # one recorded round: open home, then a switch to each of the other six pages
        assert [(s.action, s.page) for s in samples] == [("open", "home")] + [
            ("switch", name) for name in PAGES if name != "home"]
        assert all(0 < s.run_ms <= s.ms for s in samples)
    text = "\n".join(cross_report(cross))
    assert "failures: browser 0, protocol 0" in text
