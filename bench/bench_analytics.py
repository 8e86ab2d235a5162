"""Benchmark of the spend analytics (concentration, lanes, anomalies, key hygiene) at 1M and 10M
rollup rows, and of a full "overview" computation. Standalone, no database.

The input is a deterministic synthetic *priced* usage frame built in memory (numpy, seed 7):
USAGE_SCHEMA columns plus ``amount_cents`` (a per-meter unit price x quantity), 4 months of days,
40 projects, 2,000 api keys (each bound to one project and environment; 1% of rows come from the
other environment), 8 workloads, 6 meters, channels from the meter. Rows are random draws, so a
rollup key may repeat; the analytics sum them. Pricing and allocation are not timed here (they
belong to the invoice benchmarks); the analytics take priced frames.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_analytics.py [--sizes 1000000 10000000]
[--repeat 3] [--write]``; ``--write`` replaces the "## Analytics" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from metering.anomalies import lane_anomalies
from metering.concentration import driven_by, spend_concentration
from metering.domain import API_KEY, DAY, METER, METER_NAMES, PROJECT, USAGE_SCHEMA, WORKLOAD
from metering.keys import cost_per_lookup, key_consumption, key_flags, traffic_by_channel
from metering.lanes import cut_windows, lanes_period_over_period, like_for_like_windows, period_windows
from queries.catalog import API_KEYS_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
START = date(2026, 1, 1)
DAYS = 120  # 2026-01-01 .. 2026-04-30
AS_OF = date(2026, 4, 30)
N_PROJECTS, N_KEYS, N_WORKLOADS = 40, 2000, 8
UNIT_CENTS = {"lookup": 25, "expanded_history": 100, "report_job": 1000, "export_records": 1,
              "webhook_delivery": 0, "assisted_review": 500}
CHANNEL_OF = {"webhook_delivery": "delivery", "assisted_review": "operator"}
DIMS = (PROJECT, API_KEY, WORKLOAD)


def synthetic_usage(rows: int, seed: int = 7) -> pl.DataFrame:
    """A priced usage frame: USAGE_SCHEMA + amount_cents, ``rows`` rows, deterministic."""
    rng = np.random.default_rng(seed)
    key_project = rng.integers(0, N_PROJECTS, N_KEYS)
    key_env = (rng.random(N_KEYS) < 0.7).astype(np.int64)  # 1 = production
    key = np.minimum(rng.zipf(1.3, rows) - 1, N_KEYS - 1)  # a few keys carry most traffic
    meter = rng.choice(len(METER_NAMES), rows, p=[0.5, 0.12, 0.03, 0.1, 0.2, 0.05])
    env = np.where(rng.random(rows) < 0.01, 1 - key_env[key], key_env[key])
    failed = rng.random(rows) < 0.05
    retry = (meter == METER_NAMES.index("webhook_delivery")) & (rng.random(rows) < 0.1)
    events = rng.integers(1, 200, rows)
    qty = events * np.where(meter == METER_NAMES.index("export_records"), 1000, 1)
    eligible = ~failed & ~retry
    unit = np.array([UNIT_CENTS[m] for m in METER_NAMES])[meter]
    amount = np.where(eligible, qty * unit, 0)
    day = rng.integers(0, DAYS, rows)
    spike = (day == 100) & (meter == METER_NAMES.index("report_job")) & (key < 50)  # a report-heavy day
    amount = np.where(spike, amount * 20, amount)
    meters = pl.Series(list(METER_NAMES))
    workloads = pl.Series([f"workload-{i}" for i in range(N_WORKLOADS)])
    frame = pl.DataFrame({
        DAY: pl.Series(day + (START - date(1970, 1, 1)).days, dtype=pl.Int32).cast(pl.Date),
        "org": pl.repeat("acme", rows, eager=True),
        PROJECT: pl.Series([f"project-{i:02d}" for i in range(N_PROJECTS)]).gather(key_project[key]),
        "environment": pl.Series(["sandbox", "production"]).gather(env),
        API_KEY: pl.Series([f"key-{i:04d}" for i in range(N_KEYS)]).gather(key),
        METER: meters.gather(meter),
        WORKLOAD: workloads.gather(rng.integers(0, N_WORKLOADS, rows)),
        "channel": pl.Series([CHANNEL_OF.get(m, "api") for m in METER_NAMES]).gather(meter),
        "status": pl.Series(["success", "failed"]).gather(failed.astype(np.int64)),
        "retry": retry,
        "eligible": eligible,
        "quantity_micros": qty * 1_000_000,
        "events": events,
        "amount_cents": amount,
    })
    return frame.select(
        *[pl.col(c).cast(t) for c, t in USAGE_SCHEMA.items()], pl.col("amount_cents").cast(pl.Int64)
    )


def synthetic_keys() -> pl.DataFrame:
    rng = np.random.default_rng(11)
    created = datetime(2025, 6, 1, tzinfo=UTC)
    rows = []
    for i in range(N_KEYS):
        revoked = created + timedelta(days=int(rng.integers(200, 330))) if i % 50 == 0 else None
        last = created + timedelta(days=int(rng.integers(0, 330)))
        env = "production" if i % 3 else "sandbox"
        rows.append(("acme", f"key-{i:04d}", f"project-{i % N_PROJECTS:02d}", env, created, last, revoked))
    return pl.DataFrame(rows, schema=API_KEYS_SCHEMA, orient="row")


def _spend(frame: pl.DataFrame, dims) -> pl.DataFrame:
    return frame.group_by(*dims, METER).agg(
        pl.col("amount_cents").sum(), pl.col("quantity_micros").filter(pl.col("eligible")).sum()
    )


def steps(usage: pl.DataFrame, keys: pl.DataFrame):
    """(name, callable) pairs; each callable does the work from the priced frame."""
    full = period_windows("2026-04")
    period_spend = (  # stands for the invoices' totals per period (not timed)
        usage.group_by(DAY).agg(pl.col("amount_cents").sum())
        .group_by(pl.col(DAY).dt.strftime("%Y-%m").alias("period")).agg(pl.col("amount_cents").sum())
    )
    lfl = like_for_like_windows(date(2026, 4, 17))

    def concentration(dim):
        return lambda: spend_concentration(_spend(usage, [dim]), dim, top_n=5)

    def lanes(dim, windows):
        def run():
            cur, prev = cut_windows(usage, windows)
            return lanes_period_over_period(_spend(cur, [dim]), _spend(prev, [dim]), dim)
        return run

    def anomalies():
        daily = usage.group_by(DAY, *DIMS, METER).agg(pl.col("amount_cents").sum())
        return lane_anomalies(daily, window=28, min_history=14)

    def hygiene():
        cur, prev = cut_windows(usage, full)
        spend_cur = cur.group_by("org", API_KEY).agg(pl.col("amount_cents").sum())
        spend_prev = prev.group_by("org", API_KEY).agg(pl.col("amount_cents").sum())
        key_consumption(cur, spend_cur)
        key_flags(usage, keys, AS_OF, current_spend=spend_cur, previous_spend=spend_prev)
        cost_per_lookup(usage, period_spend)
        return traffic_by_channel(usage)

    out = [(f"spend_concentration({d})", concentration(d)) for d in DIMS]
    out.append(("driven_by(project)", lambda: driven_by(_spend(usage, [PROJECT, WORKLOAD]), PROJECT)))
    out += [(f"lanes full period ({d})", lanes(d, full)) for d in DIMS]
    out += [(f"lanes like-for-like ({d})", lanes(d, lfl)) for d in DIMS]
    out.append(("lane_anomalies(api_key, workload, project)", anomalies))
    out.append(("key_consumption", lambda: key_consumption(usage, _spend(usage, [API_KEY]))))
    out.append(("key_flags", lambda: key_flags(usage, keys, AS_OF)))
    out.append(("cost_per_lookup", lambda: cost_per_lookup(usage, period_spend)))
    out.append(("traffic_by_channel", lambda: traffic_by_channel(usage)))
    named = dict(out)

    def overview():
        for d in DIMS:
            named[f"spend_concentration({d})"]()
            named[f"lanes full period ({d})"]()
        named["driven_by(project)"]()
        anomalies()
        hygiene()

    out.append(("overview (concentration x3, lanes x3, anomalies, key hygiene)", overview))
    return out


def measure(rows: int, repeat: int) -> list[tuple[str, float, float]]:
    t0 = time.perf_counter()
    usage = synthetic_usage(rows)
    build = time.perf_counter() - t0
    keys = synthetic_keys()
    results = [("(build synthetic frame)", build, build)]
    for name, fn in steps(usage, keys):
        times, cpu = [], []
        for _ in range(repeat):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        wall, cpu_s = statistics.median(times), statistics.median(cpu)
        results.append((name, wall, cpu_s))
        print(f"{rows:>10,} {name:<62} {wall * 1000:9.1f} ms wall {cpu_s * 1000:9.1f} ms cpu", flush=True)
    del usage
    gc.collect()
    return results


def write_section(table: dict, repeat: int, rss_mib: float, load: tuple[float, float]) -> None:
    sizes = sorted(table)
    header = "| step | " + " | ".join(f"{s:,} rows: wall / CPU" for s in sizes) + " |"
    lines = [
        "## Analytics",
        "",
        "`PYTHONPATH=. .venv/bin/python bench/bench_analytics.py --write` (standalone, no database).",
        "Input: a deterministic synthetic priced usage frame built in memory (seed 7; 120 days,",
        "40 projects, 2,000 keys with a Zipf-skewed load, 8 workloads, 6 meters). Median of",
        f"{repeat} runs in ms: wall clock / process CPU time (all threads; less sensitive to the other",
        "engineers' load, which shows in wall time). Each step starts from the rollup frame (its",
        "group-by is included). Pricing/allocation are not included (see the invoice benchmarks).",
        f"Peak RSS of the whole run: {rss_mib:,.0f} MiB. Load average (1 min) before / after the run:",
        f"{load[0]:.1f} / {load[1]:.1f} on 2 cores.",
        "",
        header,
        "|---|" + "---:|" * len(sizes),
    ]
    names = [n for n, _, _ in table[sizes[0]]]
    for name in names:
        cells = []
        for s in sizes:
            wall, cpu = {n: (w, c) for n, w, c in table[s]}[name]
            cells.append(f"{wall * 1000:,.0f} / {cpu * 1000:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    section = "\n".join(lines)
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    start = text.find("\n## Analytics\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[nxt:] if nxt != -1 else "")
    DOC.write_text(text if text.endswith("\n") else text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write docs/performance.md ## Analytics")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    table = {rows: measure(rows, args.repeat) for rows in args.sizes}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = (load_before, os.getloadavg()[0])
    print(f"peak RSS {rss:,.0f} MiB, load {load[0]:.1f} / {load[1]:.1f}")
    if args.write:
        write_section(table, args.repeat, rss, load)


if __name__ == "__main__":
    main()
