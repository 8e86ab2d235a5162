"""Warm rerun time of every page through AppTest (the same script a browser session runs).

Usage: PYTHONPATH=. .venv/bin/python bench/bench_pages.py [DATABASE_URL [--demo]] [--rollup-rows N]
       [--pages home,lanes,...] [--json PATH] [--write]

Default database: a fresh default-size demo in a temporary SQLite file; with a DATABASE_URL,
``--demo`` first runs ``init-db`` and ``demo`` on it (an empty database). ``--rollup-rows N``
adds synthetic daily rollup rows for acme-insurance until the org has N of them (on top of
the demo's; deterministic, seed 7, spread over the last ~13 months up to today, on the org's
own api keys and projects, with workloads ``bench-wNN`` so no row collides with a demo row):
the "1M rollup rows" case of docs/performance.md. Reports the first run and the median of 5
warm reruns per page (caches filled by the first run), for an open and a closed period; the
"entry" column is the run that opens the app (the first one of the process starts with empty
caches: the cold load of the Billing home). ``--json PATH`` also writes the results as JSON.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = ["pages/home.py", "pages/lanes.py", "pages/projects.py", "pages/keys.py",
         "pages/forecast.py", "pages/invoice.py", "pages/data.py"]
ORG = "acme-insurance"
HISTORY_DAYS = 396


def _option(name: str) -> str | None:
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def add_rollup_rows(engine, target: int, seed: int = 7) -> int:
    """Insert synthetic rollup rows for ORG until it has ``target`` rows; returns rows added.

    Unique by construction: row i takes key index (i * stride) mod (days x keys x meters x
    workloads), a permutation of the key space, so no dedupe is needed.
    """
    import numpy as np
    import polars as pl
    import sqlalchemy as sa

    from metering.domain import METER_NAMES, USAGE_SCHEMA, WEBHOOK_METER
    from metering.periods import utcnow
    from queries.schema import api_keys, usage_daily

    with engine.connect() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(usage_daily)
                            .where(usage_daily.c.org == ORG)).scalar_one()
        keys = conn.execute(sa.select(api_keys.c.api_key, api_keys.c.project, api_keys.c.environment)
                            .where(api_keys.c.org == ORG).order_by(api_keys.c.api_key)).all()
    n = target - have
    if n <= 0:
        return 0
    n_keys, n_meters = len(keys), len(METER_NAMES)
    n_work = -(-n // (HISTORY_DAYS * n_keys * n_meters)) + 1
    total = HISTORY_DAYS * n_keys * n_meters * n_work
    stride = next(s for s in range(1_000_003, 2_000_000, 2) if np.gcd(s, total) == 1)
    j = (np.arange(n, dtype=np.int64) * stride) % total
    day, j = j % HISTORY_DAYS, j // HISTORY_DAYS
    key, j = j % n_keys, j // n_keys
    meter, work = j % n_meters, j // n_meters
    rng = np.random.default_rng(seed)
    meters = np.array(METER_NAMES)[meter]
    failed = rng.random(n) < 0.04
    retry = (meters == WEBHOOK_METER) & (rng.random(n) < 0.05)
    qty = rng.integers(1, 60, n).astype(np.int64) * 1_000_000 + np.where(
        rng.random(n) < 0.1, rng.integers(0, 1_000_000, n), 0)
    first = utcnow().date() - timedelta(days=HISTORY_DAYS - 1)
    frame = pl.DataFrame({
        "day": pl.Series(day).cast(pl.Int32),
        "org": [ORG] * n,
        "project": np.array([k[1] for k in keys])[key],
        "environment": np.array([k[2] for k in keys])[key],
        "api_key": np.array([k[0] for k in keys])[key],
        "meter": meters,
        "workload": np.char.add("bench-w", np.char.zfill(work.astype(str), 2)),
        "channel": np.where(meters == WEBHOOK_METER, "delivery",
                            np.where(meters == "assisted_review", "operator", "api")),
        "status": np.where(failed, "failed", "success"),
        "retry": retry,
        "eligible": ~failed & ~retry,
        "quantity_micros": qty,
        "events": qty // 1_000_000 + 1,
    }).with_columns((pl.lit(first) + pl.duration(days=pl.col("day"))).cast(pl.Date).alias("day"))
    frame = frame.select(list(USAGE_SCHEMA))
    cols = list(USAGE_SCHEMA)
    if engine.dialect.name == "postgresql":
        buf = io.BytesIO()
        frame.write_csv(buf, include_header=False)
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur, cur.copy(
                    f"COPY usage_daily ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buf.getvalue())
            raw.commit()
        finally:
            raw.close()
    else:
        rows = frame.with_columns(pl.col("day").cast(pl.String)).rows()
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.executemany(f"INSERT INTO usage_daily ({', '.join(cols)}) "
                            f"VALUES ({', '.join('?' * len(cols))})", rows)
            raw.commit()
        finally:
            raw.close()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE usage_daily"))
    return n


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rollup = _option("--rollup-rows")
    pages_opt = _option("--pages")
    json_path = _option("--json")
    args = [a for a in args if a not in (rollup, pages_opt, json_path)]
    if args:
        url = args[0]
        if "--demo" in sys.argv:
            from metering.cli import main as cli

            cli(["--database-url", url, "init-db"])
            cli(["--database-url", url, "demo"])
    else:
        from metering.cli import main as cli

        url = f"sqlite:///{tempfile.mkdtemp()}/bench_pages.db"
        cli(["--database-url", url, "init-db"])
        cli(["--database-url", url, "demo"])
    os.environ["METERING_DATABASE_URL"] = url
    import sqlalchemy as sa
    from streamlit.testing.v1 import AppTest

    from metering.periods import period_of, shift_period, utcnow
    from queries.engine import make_engine

    eng = make_engine(url)
    added = 0
    if rollup:
        t0 = time.perf_counter()
        added = add_rollup_rows(eng, int(rollup))
        print(f"added {added:,} synthetic rollup rows for {ORG} in {time.perf_counter() - t0:.1f} s",
              flush=True)
    with eng.connect() as c:
        rollup_rows = c.execute(sa.text("select count(*) from usage_daily")).scalar()
        org_rows = c.execute(sa.text("select count(*) from usage_daily where org = :o"), {"o": ORG}).scalar()
    eng.dispose()
    pages = PAGES if not pages_opt else [f"pages/{p.strip()}.py" for p in pages_opt.split(",")]
    open_p = period_of(utcnow())
    rows = []
    for period in (open_p, shift_period(open_p, -1)):
        for page in pages:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
            at.query_params["org"] = ORG
            at.query_params["period"] = period
            t0 = time.perf_counter()
            at.run()
            entry = time.perf_counter() - t0
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
            med = statistics.median(warm)
            rows.append((page, period, entry, first, med))
            print(f"  {page} {period}: entry {entry:.2f} s, first {first:.2f} s, warm median "
                  f"{med * 1000:.0f} ms", flush=True)
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    lines = [f"{backend}. Rollup rows in the database: {rollup_rows:,}; of {ORG}: {org_rows:,}"
             + (f" ({added:,} synthetic, `--rollup-rows {rollup}`)" if rollup else "") + ".", "",
             "| page | period | entry run (s) | first run (s) | warm rerun median (ms) |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {p} | {per} | {en:.2f} | {f:.2f} | {w * 1000:.0f} |" for p, per, en, f, w in rows]
    text = "\n".join(lines)
    print(text)
    if json_path:
        import json

        Path(json_path).write_text(json.dumps({
            "backend": backend, "rollup_rows": rollup_rows, "org_rows": org_rows, "added": added,
            "pages": [{"page": p, "period": per, "entry_s": en, "first_s": f, "warm_median_s": w}
                      for p, per, en, f, w in rows]}))
    if "--write" in sys.argv:
        perf = ROOT / "docs" / "performance.md"
        body = perf.read_text() if perf.exists() else "# Performance\n"
        start = body.find("## Pages")
        section = ("## Pages (AppTest warm reruns)\n\n" + text + "\n\nReproduce: "
                   "`PYTHONPATH=. .venv/bin/python bench/bench_pages.py " + " ".join(sys.argv[1:]) + "`\n")
        if start >= 0:
            end = body.find("\n## ", start + 5)
            body = body[:start] + section + ("" if end < 0 else body[end:])
        else:
            body = body.rstrip() + "\n\n" + section
        perf.write_text(body)


if __name__ == "__main__":
    main()
