"""Warm rerun time of every page through AppTest (the same script a browser session runs).

Usage: PYTHONPATH=. .venv/bin/python bench/bench_pages.py [DATABASE_URL] [--write]
Default database: a fresh default-size demo in a temporary SQLite file. Reports the median of
5 warm reruns per page (caches filled by a first run), for an open and a closed period.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = ["pages/home.py", "pages/lanes.py", "pages/projects.py", "pages/keys.py",
         "pages/forecast.py", "pages/invoice.py", "pages/data.py"]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if args:
        url = args[0]
    else:
        from metering.cli import main as cli

        url = f"sqlite:///{tempfile.mkdtemp()}/bench_pages.db"
        cli(["--database-url", url, "init-db"])
        cli(["--database-url", url, "demo"])
    os.environ["METERING_DATABASE_URL"] = url
    import sqlalchemy as sa
    from streamlit.testing.v1 import AppTest

    from metering.periods import period_of, shift_period, utcnow

    eng = sa.create_engine(url)
    with eng.connect() as c:
        rollup_rows = c.execute(sa.text("select count(*) from usage_daily")).scalar()
    open_p = period_of(utcnow())
    rows = []
    for period in (open_p, shift_period(open_p, -1)):
        for page in PAGES:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
            at.query_params["org"] = "acme-insurance"
            at.query_params["period"] = period
            at.run()
            at.switch_page(page)
            t0 = time.perf_counter()
            at.run()
            first = time.perf_counter() - t0
            warm = []
            for _ in range(5):
                t0 = time.perf_counter()
                at.run()
                warm.append(time.perf_counter() - t0)
            assert not at.exception, [e.value for e in at.exception]
            rows.append((page, period, first, statistics.median(warm)))
    lines = [f"Rollup rows in the database: {rollup_rows:,}. Org: acme-insurance.", "",
             "| page | period | first run (s) | warm rerun median (ms) |", "|---|---|---:|---:|"]
    lines += [f"| {p} | {per} | {f:.2f} | {w * 1000:.0f} |" for p, per, f, w in rows]
    text = "\n".join(lines)
    print(text)
    if "--write" in sys.argv:
        perf = ROOT / "docs" / "performance.md"
        body = perf.read_text() if perf.exists() else "# Performance\n"
        start = body.find("## Pages")
        section = ("## Pages (AppTest warm reruns)\n\n" + text + "\n\nReproduce: "
                   "`PYTHONPATH=. .venv/bin/python bench/bench_pages.py --write`\n")
        if start >= 0:
            end = body.find("\n## ", start + 5)
            body = body[:start] + section + ("" if end < 0 else body[end:])
        else:
            body = body.rstrip() + "\n\n" + section
        perf.write_text(body)


if __name__ == "__main__":
    main()
