"""Benchmark of demo data: generating events at scale, and the `demo` load on SQLite and PostgreSQL.

Run: PYTHONPATH=. .venv/bin/python bench/demo_data.py [--events 10000000] [--pg-url URL]
Each measurement runs in its own subprocess so peak RSS (ru_maxrss) is its own. Prints a
Markdown table for docs/performance.md ("Demo data" section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/metering_bench_demo"
END = "2026-11-18T15:30:00+00:00"

_GENERATE = """
import json, resource, sys, time
from datetime import datetime
from metering.demo import generate_events
t = time.perf_counter()
f = generate_events(end=datetime.fromisoformat(sys.argv[1]), events=int(sys.argv[2]) or None)
s = time.perf_counter() - t
print(json.dumps({"events": f.height, "seconds": s,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_LOAD = """
import json, resource, sys, time
from datetime import datetime
from queries.engine import make_engine
from metering.demo import load_demo
engine = make_engine(sys.argv[1])
t = time.perf_counter()
r = load_demo(engine, end=datetime.fromisoformat(sys.argv[2]), events=int(sys.argv[3]) or None)
s = time.perf_counter() - t
print(json.dumps({"events": r.accepted, "seconds": s, "ingest_seconds": r.ingest_seconds,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fresh_pg(url: str) -> None:
    from sqlalchemy import make_url

    from queries.engine import recreate_database

    recreate_database(make_url(url).set(database="postgres"), make_url(url).database)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000, help="size of the generation run")
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--skip-load", action="store_true")
    a = ap.parse_args()
    rows = []
    g = _run(_GENERATE, END, "0")
    rows.append(("generate_events, default size", g))
    g = _run(_GENERATE, END, str(a.events))
    rows.append((f"generate_events(events={a.events:,})", g))
    if not a.skip_load:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(("demo load, default size, SQLite",
                         _run(_LOAD, f"sqlite:///{tmp}/bench.db", END, "0")))
        _fresh_pg(a.pg_url)
        rows.append(("demo load, default size, PostgreSQL", _run(_LOAD, a.pg_url, END, "0")))
    print("| run | events | wall s | events/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['events']:,} | {r['seconds']:.1f} | {r['events'] / r['seconds']:,.0f} "
              f"| {r['peak_mib']:,.0f} |")


if __name__ == "__main__":
    main()
