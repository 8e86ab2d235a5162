"""Forecast benchmark and accuracy on the demo data (no database): prints markdown tables.

1. Timing: backtest (3 methods x 6 closed periods x 15 cut days) + method choice for 100 daily
   series, and ``project_invoice`` per demo org.
2. Accuracy: out-of-sample backtest of the projected invoice per demo org (MAPE at day 7/14/21
   vs the run-rate baseline, coverage of the 80% band), priced with pricing/default.toml.

Run: PYTHONPATH=. .venv/bin/python bench/bench_forecast.py
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metering.demo import DEFAULT_RATE_CARD, generate_events  # noqa: E402
from metering.domain import QUANTITY_SCALE, WEBHOOK_METER  # noqa: E402
from metering.forecast import (  # noqa: E402
    METHODS,
    REPORT_CUT_DAYS,
    _cut_set,
    backtest,
    choose_methods,
    daily_quantities,
    invoice_backtest,
    project_invoice,
    series_wape,
)
from metering.pricing import parse_rate_card  # noqa: E402

END = datetime(2026, 3, 15, tzinfo=UTC)  # events through 2026-03-14: March is the open period
AS_OF = date(2026, 3, 14)
PERIODS = [f"2025-{m:02d}" for m in range(9, 13)] + ["2026-01", "2026-02"]  # last 6 closed


def demo_usage() -> pl.DataFrame:
    """Demo events aggregated to the usage-frame columns the forecast reads (eligible daily)."""
    ev = generate_events(end=END)
    first_try = (pl.col("meter") != WEBHOOK_METER) | (pl.col("attempt") == 1)
    eligible = (pl.col("status") == "success") & first_try
    return (
        ev.with_columns(
            pl.col("occurred_at").dt.date().alias("day"),
            eligible.alias("eligible"),
            (pl.col("quantity").cast(pl.Decimal(38, 6)) * QUANTITY_SCALE).cast(pl.Int64)
            .alias("quantity_micros"),
        )
        .group_by("day", "org", "meter", "environment", "eligible")
        .agg(pl.col("quantity_micros").sum())
        .filter(pl.col("day") <= AS_OF)
        .sort("org", "meter", "environment", "day")
    )


def main() -> None:
    t0 = time.perf_counter()
    usage = demo_usage()
    card = parse_rate_card(DEFAULT_RATE_CARD.read_text())
    print(f"demo events -> daily usage: {time.perf_counter() - t0:.2f} s, {usage.height} rows")
    orgs = sorted(usage["org"].unique().to_list())

    # --- timing: 100 series --------------------------------------------------------------
    frames = []
    for org in orgs:
        d = daily_quantities(usage.filter(pl.col("org") == org), end=AS_OF)
        frames.append(d.with_columns(pl.col("meter") + "@" + org))
    base = pl.concat(frames)
    keys = base.select("meter", "environment").unique().sort("meter", "environment")
    copies = []
    i = 0
    while sum(c.select("meter", "environment").unique().height for c in copies) < 100:
        copies.append(base.with_columns(pl.col("meter") + f"#{i}"))
        i += 1
    many = pl.concat(copies)
    wanted = many.select("meter", "environment").unique().sort("meter", "environment").head(100)
    many = many.join(wanted, on=["meter", "environment"])
    n_series = many.select("meter", "environment").unique().height
    t = time.perf_counter()
    bt = backtest(many, PERIODS, _cut_set(REPORT_CUT_DAYS), METHODS)
    choose_methods(bt.filter(pl.col("cut_day").is_in(REPORT_CUT_DAYS)))
    bt_s = time.perf_counter() - t
    print(f"\nbacktest + choice, {n_series} series ({keys.height} distinct demo series, copied), "
          f"{len(PERIODS)} periods x {len(_cut_set(REPORT_CUT_DAYS))} cut days x {len(METHODS)} methods: "
          f"{bt_s:.2f} s ({bt.height} forecasts)")

    proj_times = []
    projections = {}
    for org in orgs:
        t = time.perf_counter()
        projections[org] = project_invoice(usage.filter(pl.col("org") == org), card, org, "2026-03", AS_OF)
        proj_times.append(time.perf_counter() - t)
    print(f"project_invoice per org (incl. its backtest and 31-day priced chart): "
          f"mean {sum(proj_times) / len(proj_times):.2f} s, max {max(proj_times):.2f} s "
          f"over {len(orgs)} orgs")

    # --- accuracy --------------------------------------------------------------------------
    print("\n| org | series | cut day | MAPE chosen | MAPE run-rate | coverage (80% band) |")
    print("|---|---|---|---|---|---|")
    agg: dict[int, list] = {c: [] for c in REPORT_CUT_DAYS}
    for org in orgs:
        daily = daily_quantities(usage.filter(pl.col("org") == org), end=AS_OF)
        n = daily.select("meter", "environment").unique().height
        for acc in invoice_backtest(daily, PERIODS, card, org):
            agg[acc.cut_day].append(acc)
            print(f"| {org} | {n} | {acc.cut_day} | {_pct(acc.mape)} | {_pct(acc.mape_run_rate)} | "
                  f"{_pct(acc.coverage)} |")
    print("\n| cut day | org-periods | mean MAPE chosen | mean MAPE run-rate | coverage |")
    print("|---|---|---|---|---|")
    for cut, accs in agg.items():
        n = sum(a.periods for a in accs)
        mape = sum(a.mape * a.periods for a in accs if a.mape is not None) / n
        base = sum(a.mape_run_rate * a.periods for a in accs if a.mape_run_rate is not None) / n
        cov = sum(a.coverage * a.periods for a in accs if a.coverage is not None) / n
        print(f"| {cut} | {n} | {_pct(mape)} | {_pct(base)} | {_pct(cov)} |")

    # series-level: which method wins, and the worst series
    wape = series_wape(backtest(base_frame(usage, orgs), PERIODS, REPORT_CUT_DAYS))
    choice = choose_methods(backtest(base_frame(usage, orgs), PERIODS, REPORT_CUT_DAYS))
    counts: dict[str, int] = {}
    for m in choice.values():
        counts[m] = counts.get(m, 0) + 1
    print(f"\nmethod chosen per series (in-sample, all 6 periods): {counts}")
    worst = (wape.filter(pl.col("method") == "run_rate").sort("wape", descending=True).head(8))
    print("\n| series | run-rate WAPE of period quantity |\n|---|---|")
    for r in worst.iter_rows(named=True):
        print(f"| {r['meter']} / {r['environment']} | {_pct(r['wape'])} |")
    print("\nprojections as of 2026-03-14:")
    for org, p in projections.items():
        print(f"  {org}: MTD {p.mtd_cents / 100:,.2f}, projected {p.total_cents / 100:,.2f} "
              f"[{p.low_cents / 100:,.2f}, {p.high_cents / 100:,.2f}]")


def base_frame(usage: pl.DataFrame, orgs: list[str]) -> pl.DataFrame:
    return pl.concat([
        daily_quantities(usage.filter(pl.col("org") == org), end=AS_OF)
        .with_columns(pl.col("meter") + "@" + org)
        for org in orgs
    ])


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


if __name__ == "__main__":
    main()
