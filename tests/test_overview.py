"""billing_overview's parts and invoices equal a straightforward per-period computation:
build_invoice / allocate_invoice on windows cut by hand (a Python loop over the rows), for an
open and a closed period, on frames sorted by day (binary-search path, with and without the
Polars sorted flag) and unsorted (filter path), several orgs mixed in."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from metering.allocate import allocate_invoice
from metering.domain import DAY, USAGE_SCHEMA
from metering.invoice import MINIMUM_COMMIT_PART, TRUE_UP, build_invoice
from metering.overview import ALLOCATION_DIMENSIONS, _windows, billing_overview
from metering.pricing import parse_rate_card
from queries.usage import sort_by_keys
from tests.billing_helpers import row

CARD = parse_rate_card((Path(__file__).resolve().parent.parent / "pricing" / "default.toml").read_text())
ORGS = ("acme-insurance", "borealis-health", "cobalt-lending")
METERS = ("lookup", "expanded_history", "report_job", "webhook_delivery", "export_records")
# window edges on both sides: Sep 30 / Oct 1, Oct 15 / Oct 16, Oct 31 / Nov 1, Nov 15 / Nov 16
EDGE_DAYS = [date(2026, 9, 30), date(2026, 10, 1), date(2026, 10, 15), date(2026, 10, 16),
             date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 15), date(2026, 11, 16)]


def _rows(seed: int = 11, n: int = 900) -> list[dict]:
    rng = random.Random(seed)
    first = date(2026, 8, 20)
    out = []
    for i in range(n):
        meter = rng.choice(METERS)
        day = EDGE_DAYS[i % len(EDGE_DAYS)] if i < 80 else first + timedelta(days=rng.randrange(100))
        out.append(row(
            quantity=rng.choice([1, 2, 3, 7, 40, 250, 1300]) + rng.choice([0, 0, 0, 0.25, 0.5]),
            day=day, org=rng.choice(ORGS), project=f"p{rng.randrange(4)}",
            environment=rng.choice(("production", "sandbox")), api_key=f"k{rng.randrange(6)}",
            meter=meter, workload=rng.choice(("underwriting", "bulk-export", "finance-package")),
            channel="delivery" if meter == "webhook_delivery" else "api",
            status="failed" if rng.random() < 0.1 else "success",
            retry=meter == "webhook_delivery" and rng.random() < 0.2,
        ))
    return out


ROWS = _rows()


def _frame(rows: list[dict], order: str) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row")
    if order == "sorted-flag":  # df.sort sets Polars' sorted flag on day
        out = df.sort(list(USAGE_SCHEMA)[:-2])
        assert out[DAY].flags["SORTED_ASC"]
    elif order == "sorted-no-flag":  # what load_usage returns: sorted by day first, no flag
        out = sort_by_keys(df, list(USAGE_SCHEMA)[:-2])
        assert not out[DAY].flags["SORTED_ASC"] and out[DAY].is_sorted()
    else:
        out = df.sample(fraction=1.0, shuffle=True, seed=5)
        assert not out[DAY].is_sorted()
    return out


def _by_hand(frame: pl.DataFrame, org: str, first: date, last: date) -> pl.DataFrame:
    """The org's rows with first <= day <= last, in the frame's order: a plain Python loop."""
    keep = [r for r in frame.iter_rows(named=True) if r["org"] == org and first <= r["day"] <= last]
    return pl.DataFrame(keep, schema=USAGE_SCHEMA, orient="row")


def _expected(frame, org, period, first, last, as_of):
    usage = _by_hand(frame, org, first, last)
    inv = build_invoice(usage, CARD, org, period, as_of)
    return usage, inv, allocate_invoice(usage, inv, CARD, ALLOCATION_DIMENSIONS)


CASES = [
    # open: Nov 1-15 as of Nov 15, compared like for like with Oct 1-15
    ("2026-11", "2026-10", date(2026, 11, 15),
     (date(2026, 11, 1), date(2026, 11, 15), datetime(2026, 11, 15, tzinfo=UTC)),
     (date(2026, 10, 1), date(2026, 10, 15), datetime(2026, 10, 15, tzinfo=UTC))),
    # closed: all of October against all of September
    ("2026-10", "2026-09", date(2026, 11, 20),
     (date(2026, 10, 1), date(2026, 10, 31), None),
     (date(2026, 9, 1), date(2026, 9, 30), None)),
]


@pytest.mark.parametrize("order", ["sorted-flag", "sorted-no-flag", "unsorted"])
@pytest.mark.parametrize("org", ORGS)
@pytest.mark.parametrize(("period", "compare", "today", "cur", "prev"), CASES, ids=["open", "closed"])
def test_overview_equals_per_period_computation(order, org, period, compare, today, cur, prev):
    frame = _frame(ROWS, order)
    ov = billing_overview(frame, CARD, org, period, compare, today, with_projection=False)
    usage, inv, parts = _expected(frame, org, period, *cur)
    p_usage, p_inv, p_parts = _expected(frame, org, compare, *prev)
    assert usage.height > 20 and p_usage.height > 20  # the windows are not trivially empty

    assert ov.is_open == (cur[2] is not None)
    assert ov.previous_window == (prev[0], prev[1])
    assert ov.invoice == inv
    assert ov.previous_invoice == p_inv
    assert ov.parts.equals(parts)
    assert ov.previous_parts.equals(p_parts)
    assert ov.usage.equals(usage)
    # the parts sum exactly to each invoice, and the invoices are not zero
    assert inv.total_cents > 0 and p_inv.total_cents > 0
    assert int(ov.parts["amount_cents"].sum()) == inv.total_cents
    assert int(ov.previous_parts["amount_cents"].sum()) == p_inv.total_cents


def test_true_up_part_in_both_periods():
    """borealis-health has a 5000.00 minimum commitment: with its small rows only, both periods
    fall below it and carry a true-up part."""
    small = [r for r in ROWS if r["org"] == "borealis-health" and r["quantity_micros"] <= 3_000_000]
    frame = _frame(small, "sorted-no-flag")
    ov = billing_overview(frame, CARD, "borealis-health", "2026-11", "2026-10", date(2026, 11, 15),
                          with_projection=False)
    for inv, parts in ((ov.invoice, ov.parts), (ov.previous_invoice, ov.previous_parts)):
        assert inv.total_cents == 500_000
        up = parts.filter(pl.col("meter") == TRUE_UP)
        assert up.height == 1 and up["project"][0] == MINIMUM_COMMIT_PART
        assert int(up["amount_cents"][0]) == inv.true_up_cents > 0
        assert 0 < inv.subtotal_cents < 500_000


@pytest.mark.parametrize("order", ["sorted-flag", "sorted-no-flag", "unsorted"])
@pytest.mark.parametrize(("first", "last"), [
    (date(2026, 11, 1), date(2026, 11, 15)),
    (date(2026, 10, 16), date(2026, 10, 16)),   # one day
    (date(2026, 8, 1), date(2026, 8, 19)),      # before every row: empty
    (date(2026, 12, 1), date(2026, 12, 31)),    # after every row: empty
    (date(2026, 8, 1), date(2027, 1, 1)),       # the whole frame
])
def test_window_equals_filter(order, first, last):
    frame = _frame(ROWS, order)
    other = (date(2026, 10, 1), date(2026, 10, 15))
    got, got_other = _windows(frame, "cobalt-lending", [(first, last), other])
    assert got.equals(_by_hand(frame, "cobalt-lending", first, last))
    assert got_other.equals(_by_hand(frame, "cobalt-lending", *other))


def test_window_with_null_days_uses_the_filter():
    """A null day (never from load_usage) is not 'sorted': the filter path, which drops it."""
    frame = _frame(ROWS, "sorted-no-flag")
    frame = pl.concat([frame.head(1).with_columns(pl.lit(None, pl.Date).alias(DAY)), frame])
    [got] = _windows(frame, "cobalt-lending", [(date(2026, 11, 1), date(2026, 11, 15))])
    assert got.equals(_by_hand(frame.filter(pl.col(DAY).is_not_null()), "cobalt-lending",
                               date(2026, 11, 1), date(2026, 11, 15)))
