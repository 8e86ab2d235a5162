"""Benchmark: invoice + all five breakdowns (+ funnel) for one org with 1M rollup rows.

Standalone: `PYTHONPATH=. .venv/bin/python bench/bench_invoice.py [--rows N] [--write]`.
The usage frame is built in memory, deterministically (no database, no randomness): rows
cycle through 31 days, 40 projects, 2 environments, 600 api keys, 6 meters, 5 workloads and
3 channels, with some failed rows and webhook retries, quantities of 1-50 units (some
fractional). Peak memory is the process's peak RSS (ru_maxrss), which covers Polars' native
allocations (tracemalloc would not). --write replaces the "## Invoice" section of
docs/performance.md with the result.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metering.allocate import allocate_invoice  # noqa: E402
from metering.domain import METER_NAMES, USAGE_SCHEMA, WEBHOOK_METER  # noqa: E402
from metering.funnel import billable_funnel  # noqa: E402
from metering.invoice import BREAKDOWN_DIMENSIONS, build_invoice  # noqa: E402
from metering.money import format_usd  # noqa: E402
from metering.pricing import parse_rate_card  # noqa: E402

ORG = "acme-insurance"
PERIOD = "2026-03"
WORKLOADS = ["underwriting", "workforce-review", "finance-package", "compliance-package", "bulk-export"]


def build_usage(rows: int) -> pl.DataFrame:
    """A deterministic usage frame of ``rows`` rollup rows for ORG in PERIOD."""
    h = (pl.col("i") * 2654435761) % 4294967296  # Knuth multiplicative hash: spreads the cycles

    def pick(values: list[str], index: pl.Expr) -> pl.Expr:
        return pl.lit(pl.Series(values)).gather(index.cast(pl.UInt32))

    frame = pl.DataFrame({"i": pl.int_range(0, rows, dtype=pl.Int64, eager=True)}).with_columns(
        day=pl.lit(date(2026, 3, 1)) + pl.duration(days=pl.col("i") % 31),
        org=pl.lit(ORG),
        project=pl.format("project-{}", (h // 7) % 40),
        environment=pick(["production", "sandbox"], ((h // 11) % 5 == 0).cast(pl.UInt32)),
        api_key=pl.format("key-{}", (h // 13) % 600),
        meter=pick(list(METER_NAMES), h % len(METER_NAMES)),
        workload=pick(WORKLOADS, (h // 17) % 5),
        channel=pick(["api", "operator", "delivery"], (h // 19) % 3),
        status=pick(["success", "failed"], ((h // 23) % 20 == 0).cast(pl.UInt32)),
        quantity_micros=((h // 31) % 50 + 1) * 1_000_000 + ((h // 37) % 4 == 0).cast(pl.Int64) * 250_000,
        events=(h // 31) % 50 + 1,
    ).with_columns(
        retry=(pl.col("meter") == WEBHOOK_METER) & ((h // 29) % 9 == 0),
    ).with_columns(
        eligible=(pl.col("status") == "success") & ~pl.col("retry"),
    )
    return frame.select([pl.col(c).cast(t) for c, t in USAGE_SCHEMA.items()])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(rows: int) -> dict:
    card = parse_rate_card((ROOT / "pricing" / "default.toml").read_text())
    t0 = time.perf_counter()
    usage = build_usage(rows)
    t_build = time.perf_counter() - t0
    rss_before = peak_rss_mib()
    timings = {}
    t0 = time.perf_counter()
    inv = build_invoice(usage, card, ORG, PERIOD)
    timings["invoice"] = time.perf_counter() - t0
    parts = {}
    for dim in BREAKDOWN_DIMENSIONS:
        t = time.perf_counter()
        alloc = allocate_invoice(usage, inv, card, [dim])
        timings[f"breakdown by {dim}"] = time.perf_counter() - t
        parts[dim] = alloc.height
        assert alloc["amount_cents"].sum() == inv.total_cents, dim
    t = time.perf_counter()
    alloc = allocate_invoice(usage, inv, card, ["project", "api_key", "day"])
    timings["breakdown by project x api_key x day"] = time.perf_counter() - t
    parts["project x api_key x day"] = alloc.height
    assert alloc["amount_cents"].sum() == inv.total_cents
    t = time.perf_counter()
    billable_funnel(usage, inv)
    timings["funnel"] = time.perf_counter() - t
    five = timings["invoice"] + sum(timings[f"breakdown by {d}"] for d in BREAKDOWN_DIMENSIONS)
    return {
        "rows": rows, "build_s": t_build, "timings": timings, "invoice_plus_five_s": five,
        "parts": parts, "lines": len(inv.lines), "total_cents": inv.total_cents,
        "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib(),
    }


def report(r: dict) -> str:
    lines = [
        "## Invoice",
        "",
        "`PYTHONPATH=. .venv/bin/python bench/bench_invoice.py` (standalone; the usage frame is",
        f"built in memory, deterministically: {r['rows']:,} rollup rows for one org and one month,",
        "31 days x 40 projects x 2 environments x 600 api keys x 6 meters x 5 workloads x 3 channels).",
        f"Python {platform.python_version()}, Polars {pl.__version__}; shared 2-core machine.",
        "",
        "| step | wall s | parts |",
        "|---|---:|---:|",
    ]
    for name, secs in r["timings"].items():
        key = name.removeprefix("breakdown by ")
        parts = r["parts"].get(key, "")
        lines.append(f"| {name} | {secs:.3f} | {parts if parts == '' else f'{parts:,}'} |")
    lines += [
        f"| **invoice + five breakdowns** | **{r['invoice_plus_five_s']:.3f}** | |",
        "",
        f"- {r['lines']} invoice lines, total {format_usd(r['total_cents'])}; every breakdown was",
        "  checked to sum exactly to the total.",
        f"- Peak RSS {r['peak_rss_mib']:.0f} MiB for the whole process; {r['rss_before_mib']:.0f} MiB was",
        f"  already reached after importing and building the frame ({r['build_s']:.2f} s), so the",
        f"  invoice and breakdowns added about {r['peak_rss_mib'] - r['rss_before_mib']:.0f} MiB.",
        "- Allocation is vectorised: `amount_cents * quantity_micros` as Int128, floor division and",
        "  remainder, one sort per call to rank remainders within each line; no Python loop per row.",
        "  The invoice itself is one group-by (12 lines at most) plus exact Decimal tier arithmetic.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "docs" / "performance.md"
    doc = path.read_text() if path.exists() else "# Performance\n"
    start = doc.find("## Invoice")
    if start == -1:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        nxt = doc.find("\n## ", start + 1)
        doc = doc[:start] + text + ("" if nxt == -1 else doc[nxt + 1:])
    path.write_text(doc.rstrip("\n") + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--write", action="store_true", help="write the Invoice section of docs/performance.md")
    args = p.parse_args(argv)
    r = run(args.rows)
    text = report(r)
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
