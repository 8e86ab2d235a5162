"""Overview benchmark: the project's Polars code vs pandas vs DuckDB SQL on the same figures.

Owns the synthetic rollup data for the comparison and the three implementations of the
"overview" figures for one org: the open period's invoice lines (billable quantity per
(meter, environment) -> graduated tiers -> org discount -> cents half up, minimum-commit
true-up), spend per project by largest-remainder allocation over (project, environment,
api_key, workload, day) parts, and the same for the like-for-like previous period.

(a) project: ``metering.overview.billing_overview`` (``with_projection=False``: the forecast has
    no pandas/DuckDB counterpart here; bench/bench_forecast.py times it);
(b) pandas: a straightforward groupby/merge/sort implementation, tiers priced in Decimal;
(c) DuckDB: one SQL statement per period in HUGEINT arithmetic (tiers, discount, half-up cents,
    allocation with window functions).
All three must give identical integer cents; the run fails otherwise.

Each implementation runs in its own subprocess (peak RSS = its VmHWM) on the same
Parquet file; loading is not timed, the computation is (median of N runs).

Run: ``PYTHONPATH=. .venv/bin/python bench/overview_compare.py [--sizes 100000 1000000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from metering.domain import (  # noqa: E402
    API_KEY,
    CHANNEL,
    DAY,
    ELIGIBLE,
    ENVIRONMENT,
    EVENTS,
    METER,
    METER_NAMES,
    ORG,
    PROJECT,
    QUANTITY_MICROS,
    RETRY,
    STATUS,
    USAGE_SCHEMA,
    WEBHOOK_METER,
    WORKLOAD,
)

ORG_NAME = "acme-insurance"  # 10% discount, webhooks billable in pricing/default.toml
PERIOD, COMPARE = "2026-11", "2026-10"
TODAY = date(2026, 11, 15)  # open period: month to date, previous period cut like-for-like
FIRST_DAY = date(2025, 10, 17)  # ~13 months of history up to TODAY
DATA_DIR = Path("/tmp/bench_overview")
IMPLEMENTATIONS = ("project", "pandas", "duckdb")
CARD_PATH = ROOT / "pricing" / "default.toml"


def run_compare(sizes, repeat_small: int = 3, repeat_large: int = 1, large: int = 10_000_000) -> list[dict]:
    """For each size: write data, run the three implementations, check they agree; rows of results."""
    out = []
    for n in sizes:
        # generated in a child too, so this process's RSS (inherited by children's ru_maxrss
        # on Linux) stays small for the other benches the suite starts after this one
        subprocess.run([sys.executable, __file__, "--write-data", str(n)], check=True, cwd=ROOT)
        path = write_usage(n)
        results = {}
        for impl in IMPLEMENTATIONS:
            reps = repeat_large if n >= large else repeat_small
            proc = subprocess.run(
                [sys.executable, __file__, "--child", impl, str(path), str(reps)],
                capture_output=True, text=True, cwd=ROOT,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{impl} at {n} rows failed:\n{proc.stderr[-3000:]}")
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  overview {impl:8s} {n:>11,} rows: {results[impl]['median_s']:.3f} s, "
                  f"peak {results[impl]['peak_rss_mib']:.0f} MiB", flush=True)
        ref = results["project"]["figures"]
        for impl in ("pandas", "duckdb"):
            if results[impl]["figures"] != ref:
                raise AssertionError(f"{impl} disagrees with the project at {n} rows: "
                                     f"{_diff(ref, results[impl]['figures'])}")
        out.append({"rows": n, "repeat": reps, "figures": ref,
                    **{impl: {k: v for k, v in r.items() if k != "figures"} for impl, r in results.items()}})
    return out


def write_usage(n: int, seed: int = 7) -> Path:
    """Deterministic rollup rows (USAGE_SCHEMA) for one org, written once to Parquet."""
    import numpy as np
    import polars as pl

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"usage_{n}_{seed}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    n_days = (TODAY - FIRST_DAY).days + 1
    projects = np.array([f"project-{i:02d}" for i in range(40)])
    key_project = np.arange(600) % 40
    key_env = (np.arange(600) // 40) % 2
    keys = np.array([f"key-{i:04d}" for i in range(600)])
    workloads = np.array(["underwriting", "workforce-review", "finance-package",
                          "compliance-package", "bulk-export"])
    meters = np.array(METER_NAMES)
    envs = np.array(["sandbox", "production"])
    meter_p = np.array([0.45, 0.1, 0.05, 0.1, 0.25, 0.05])
    k = rng.integers(0, 600, n)
    m = rng.choice(len(meters), n, p=meter_p)
    channel = np.where(meters[m] == WEBHOOK_METER, "delivery",
                       np.where(meters[m] == "assisted_review", "operator", "api"))
    failed = rng.random(n) < 0.04
    retry = (meters[m] == WEBHOOK_METER) & (rng.random(n) < 0.05)
    whole = rng.integers(1, 60, n).astype(np.int64) * 1_000_000
    frac = np.where(rng.random(n) < 0.1, rng.integers(0, 1_000_000, n), 0)
    qty = whole + frac
    df = pl.DataFrame({
        DAY: pl.Series(rng.integers(0, n_days, n)).cast(pl.Int32),
        PROJECT: projects[key_project[k]],
        ENVIRONMENT: envs[key_env[k]],
        API_KEY: keys[k],
        METER: meters[m],
        WORKLOAD: workloads[rng.integers(0, len(workloads), n)],
        CHANNEL: channel,
        STATUS: np.where(failed, "failed", "success"),
        RETRY: retry,
        ELIGIBLE: ~failed & ~retry,
        QUANTITY_MICROS: qty,
        EVENTS: (qty // 1_000_000).astype(np.int64) + 1,
    }, strict=False).with_columns(
        (pl.lit(FIRST_DAY) + pl.duration(days=pl.col(DAY))).cast(pl.Date).alias(DAY),
        pl.lit(ORG_NAME).alias(ORG),
    ).select([pl.col(c).cast(t) for c, t in USAGE_SCHEMA.items()])
    df.write_parquet(path)
    return path


def windows() -> tuple[tuple[date, date], tuple[date, date]]:
    """(period start, through) and (compare start, like-for-like through)."""
    cur = (date(2026, 11, 1), TODAY)
    elapsed = (TODAY - cur[0]).days
    prev = (date(2026, 10, 1), date(2026, 10, 1) + timedelta(days=elapsed))
    return cur, prev


# ---------------------------------------------------------------- (a) the project's code
def project_overview(usage, card) -> dict:
    import polars as pl

    from metering.overview import billing_overview

    ov = billing_overview(usage, card, ORG_NAME, PERIOD, COMPARE, TODAY, with_projection=False)

    def figures(inv, parts):
        per_project = parts.group_by(PROJECT).agg(pl.col("amount_cents").sum())
        return {
            "lines": {f"{ln.meter}/{ln.environment}": ln.amount_cents for ln in inv.lines},
            "total": inv.total_cents,
            "projects": {r[0]: int(r[1]) for r in per_project.iter_rows()},
        }

    return {"current": figures(ov.invoice, ov.parts),
            "previous": figures(ov.previous_invoice, ov.previous_parts)}


# ---------------------------------------------------------------- (b) pandas
def pandas_overview(df, card) -> dict:
    import pandas as pd

    out = {}
    for name, (start, through) in zip(("current", "previous"), windows(), strict=True):
        u = df[(df[ORG] == ORG_NAME) & (df[DAY] >= pd.Timestamp(start))
               & (df[DAY] <= pd.Timestamp(through)) & df[ELIGIBLE]]
        q = u.groupby([METER, ENVIRONMENT], sort=True)[QUANTITY_MICROS].sum()
        q = q[q > 0]
        lines = {(m, e): _price_decimal(m, e, int(v), card) for (m, e), v in q.items()}
        true_up = max(0, _min_commit_cents(card) - sum(lines.values()))
        line_df = pd.DataFrame(
            [(m, e, c, int(q[(m, e)])) for (m, e), c in lines.items()],
            columns=[METER, ENVIRONMENT, "line_cents", "line_qty"],
        )
        dims = [PROJECT, ENVIRONMENT, API_KEY, WORKLOAD, DAY, METER]
        parts = u.groupby(dims, sort=False, observed=True)[QUANTITY_MICROS].sum().reset_index()
        parts = parts.merge(line_df, on=[METER, ENVIRONMENT], how="inner")
        assert int(line_df.line_cents.max()) * int(parts[QUANTITY_MICROS].max()) < 2**62
        num = parts["line_cents"] * parts[QUANTITY_MICROS]
        parts["floor"] = num // parts["line_qty"]
        parts["rem"] = num % parts["line_qty"]
        parts = parts.sort_values([METER, ENVIRONMENT, "rem", PROJECT, API_KEY, WORKLOAD, DAY],
                                  ascending=[True, True, False, True, True, True, True])
        grp = parts.groupby([METER, ENVIRONMENT], sort=False)
        rank = grp.cumcount()
        left = parts["line_cents"] - grp["floor"].transform("sum")
        parts["cents"] = parts["floor"] + (rank < left).astype("int64")
        per_project = parts.groupby(PROJECT)["cents"].sum()
        projects = {p: int(c) for p, c in per_project.items()}
        line_out = {f"{m}/{e}": c for (m, e), c in lines.items()}
        if true_up:
            line_out["minimum_commit_true_up/None"] = true_up
            projects["(minimum commitment)"] = true_up
        out[name] = {"lines": line_out, "total": sum(line_out.values()), "projects": projects}
    return out


def _price_decimal(meter: str, env: str, micros: int, card) -> int:
    """Graduated tiers, discount, half-up cents: written here, independently of metering/."""
    tiers = card.tiers(meter, env)
    terms = card.terms(ORG_NAME)
    if tiers is None or (meter == WEBHOOK_METER and not terms.webhooks_billable):
        return 0
    qty = Decimal(micros) / Decimal(10**6)
    gross, lo = Decimal(0), Decimal(0)
    for t in tiers:
        hi = qty if t.up_to is None else min(qty, t.up_to)
        if hi > lo:
            gross += (hi - lo) * t.unit_price
        if t.up_to is None or qty <= t.up_to:
            break
        lo = t.up_to
    net = gross * (100 - terms.discount_percent) / 100
    return int((net * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _min_commit_cents(card) -> int:
    return int((card.terms(ORG_NAME).minimum_commit * 100).to_integral_value())


# ---------------------------------------------------------------- (c) DuckDB
PRICE_SCALE = 10**6  # unit prices as integer millionths (the card has at most 4 decimals)

_DUCKDB_SQL = """
WITH u AS (
    SELECT * FROM usage WHERE org = $org AND day >= $start AND day <= $through AND eligible
),
q AS (
    SELECT meter, environment, CAST(sum(quantity_micros) AS HUGEINT) AS qty
    FROM u GROUP BY meter, environment HAVING sum(quantity_micros) > 0
),
lines AS (
    SELECT q.meter, q.environment, q.qty,
           CAST((coalesce(sum(greatest(0, least(q.qty, coalesce(t.hi, q.qty)) - t.lo) * t.price), 0)
                 * $keep + $half) // $denom AS HUGEINT) AS cents
    FROM q LEFT JOIN tiers t ON t.meter = q.meter AND t.environment = q.environment
    GROUP BY q.meter, q.environment, q.qty
),
parts AS (
    SELECT project, environment, api_key, workload, day, meter,
           CAST(sum(quantity_micros) AS HUGEINT) AS pq
    FROM u GROUP BY project, environment, api_key, workload, day, meter
),
shares AS (
    SELECT p.*, l.cents, (l.cents * p.pq) // l.qty AS fl, (l.cents * p.pq) % l.qty AS rem
    FROM parts p JOIN lines l ON l.meter = p.meter AND l.environment = p.environment
),
ranked AS (
    SELECT project, fl, cents - sum(fl) OVER w AS lft,
           row_number() OVER (PARTITION BY meter, environment
                              ORDER BY rem DESC, project, api_key, workload, day) - 1 AS rk
    FROM shares WINDOW w AS (PARTITION BY meter, environment)
)
SELECT 'line' AS kind, meter || '/' || environment AS name, cents AS cents FROM lines
UNION ALL
SELECT 'project', project, sum(fl + CASE WHEN rk < lft THEN 1 ELSE 0 END) FROM ranked GROUP BY project
"""


def duckdb_tiers(card) -> list[tuple]:
    """(meter, environment, lo_micros, hi_micros|None, price in millionths) of billed pairs."""
    terms = card.terms(ORG_NAME)
    rows = []
    for (meter, env), tiers in card.meters.items():
        if meter == WEBHOOK_METER and not terms.webhooks_billable:
            continue
        lo = 0
        for t in tiers:
            price = t.unit_price * PRICE_SCALE
            if price != price.to_integral_value():
                raise ValueError(f"{meter}/{env} unit price {t.unit_price} has more than 6 decimals")
            hi = None if t.up_to is None else int(t.up_to * 10**6)
            rows.append((meter, env, lo, hi, int(price)))
            if hi is None:
                break
            lo = hi
    return rows


def duckdb_overview(con, card) -> dict:
    terms = card.terms(ORG_NAME)
    keep = (100 - terms.discount_percent) * 100  # (100 - d) / 100 as an integer over 10**4
    if keep != keep.to_integral_value():
        raise ValueError("discount_percent with more than 2 decimals is not supported here")
    # cents = sum(slice_micros * price_e6) / 10**6 / 10**6 * keep / 10**4 * 100, half up
    denom = 10**6 * PRICE_SCALE * 10**4 // 100
    out = {}
    for name, (start, through) in zip(("current", "previous"), windows(), strict=True):
        rows = con.execute(_DUCKDB_SQL, {"org": ORG_NAME, "start": start, "through": through,
                                         "keep": int(keep), "half": denom // 2, "denom": denom}).fetchall()
        lines = {n: int(c) for k, n, c in rows if k == "line"}
        projects = {n: int(c) for k, n, c in rows if k == "project"}
        true_up = max(0, _min_commit_cents(card) - sum(lines.values()))
        if true_up:
            lines["minimum_commit_true_up/None"] = true_up
            projects["(minimum commitment)"] = true_up
        out[name] = {"lines": lines, "total": sum(lines.values()), "projects": projects}
    return out


# ---------------------------------------------------------------- child process
def _child(impl: str, path: str, repeat: int) -> dict:
    from metering.pricing import parse_rate_card

    card = parse_rate_card(CARD_PATH.read_text())
    if impl == "project":
        import polars as pl

        data = pl.read_parquet(path)
        fn = lambda: project_overview(data, card)  # noqa: E731
    elif impl == "pandas":
        import pandas as pd

        data = pd.read_parquet(path)
        data[DAY] = pd.to_datetime(data[DAY])
        fn = lambda: pandas_overview(data, card)  # noqa: E731
    else:
        import duckdb

        con = duckdb.connect()
        con.execute("CREATE TABLE usage AS SELECT * FROM read_parquet($p)", {"p": path})
        con.execute("CREATE TABLE tiers (meter VARCHAR, environment VARCHAR, lo HUGEINT, "
                    "hi HUGEINT, price HUGEINT)")
        con.executemany("INSERT INTO tiers VALUES (?, ?, ?, ?, ?)", duckdb_tiers(card))
        fn = lambda: duckdb_overview(con, card)  # noqa: E731
    times, figures = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        figures = fn()
        times.append(time.perf_counter() - t0)
    for period in figures.values():
        period["lines"] = dict(sorted(period["lines"].items()))
        period["projects"] = dict(sorted(period["projects"].items()))
    return {"median_s": statistics.median(times), "times": times,
            "peak_rss_mib": peak_rss_mib(),
            "figures": figures}


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _diff(a: dict, b: dict) -> str:
    for period in a:
        for key in a[period]:
            if a[period][key] != b[period][key]:
                return f"{period}.{key}: {a[period][key]} vs {b[period][key]}"
    return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "PARQUET", "REPEAT"), help=argparse.SUPPRESS)
    ap.add_argument("--write-data", type=int, metavar="ROWS", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_data:
        write_usage(args.write_data)
        return 0
    if args.child:
        impl, path, rep = args.child
        print(json.dumps(_child(impl, path, int(rep))))
        return 0
    for r in run_compare(args.sizes, repeat_small=args.repeat):
        p, pd_, dk = r["project"]["median_s"], r["pandas"]["median_s"], r["duckdb"]["median_s"]
        print(f"{r['rows']:>11,} rows: project {p:.3f}s, pandas {pd_:.3f}s, duckdb {dk:.3f}s; "
              f"project/duckdb {p / dk:.2f}, pandas/project {pd_ / p:.2f}; all three agree "
              f"(total {r['figures']['current']['total']} cents)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
