"""The billable funnel per meter: how traffic becomes the amount charged.

traffic = failed + webhook retries + excluded by policy + billable, and
billable = inside free allowance + unpriced + charged (quantities in integer micro-units).

- failed: rows with status ``failed`` (never counted);
- retries: successful rows that are not billable-eligible, i.e. webhook deliveries with
  attempt > 1;
- excluded by policy: eligible webhook deliveries of an org whose terms do not make webhooks
  billable (counted, priced at zero);
- inside free allowance: billable units that fell in a tier priced at 0;
- unpriced: billable units of a (meter, environment) pair the rate card does not price;
- charged: the rest, which the line amounts (``amount_cents``, after discount) are for.
"""

from __future__ import annotations

import polars as pl

from metering.domain import ELIGIBLE, EVENTS, METER, METER_NAMES, QUANTITY_MICROS, STATUS
from metering.invoice import TRUE_UP, Invoice, period_usage

FUNNEL_COLUMNS = (
    "meter", "traffic_events", "traffic_micros", "failed_micros", "retries_micros",
    "excluded_by_policy_micros", "billable_micros", "free_allowance_micros", "unpriced_micros",
    "charged_micros", "amount_cents",
)
FUNNEL_STAGES = (
    ("traffic_micros", "Traffic"),
    ("failed_micros", "Failed"),
    ("retries_micros", "Webhook retries"),
    ("excluded_by_policy_micros", "Excluded by policy"),
    ("billable_micros", "Billable"),
    ("free_allowance_micros", "Inside free allowance"),
    ("unpriced_micros", "Unpriced"),
    ("charged_micros", "Charged"),
)


def billable_funnel(usage: pl.DataFrame, invoice: Invoice) -> pl.DataFrame:
    """One row per meter with traffic or a line (registry order), columns FUNNEL_COLUMNS."""
    rows = period_usage(usage, invoice.org, invoice.period, invoice.usage_through)
    q = pl.col(QUANTITY_MICROS)
    traffic = {
        r[METER]: r
        for r in rows.group_by(METER)
        .agg(
            pl.col(EVENTS).sum().alias("traffic_events"),
            q.sum().alias("traffic_micros"),
            q.filter(pl.col(STATUS) == "failed").sum().alias("failed_micros"),
            q.filter(~pl.col(ELIGIBLE) & (pl.col(STATUS) != "failed")).sum().alias("retries_micros"),
            q.filter(pl.col(ELIGIBLE)).sum().alias("eligible_micros"),
        )
        .iter_rows(named=True)
    }
    out = []
    for meter in METER_NAMES:
        lines = [ln for ln in invoice.lines if ln.meter == meter]
        t = traffic.get(meter)
        if t is None and not lines:
            continue
        t = t or {"traffic_events": 0, "traffic_micros": 0, "failed_micros": 0, "retries_micros": 0,
                  "eligible_micros": 0}
        excluded = sum(ln.quantity_micros for ln in lines if not ln.billed)
        unpriced = sum(ln.quantity_micros for ln in lines if ln.unpriced)
        free = sum(_free_micros(ln) for ln in lines)
        billable = t["eligible_micros"] - excluded
        out.append({
            "meter": meter,
            "traffic_events": t["traffic_events"],
            "traffic_micros": t["traffic_micros"],
            "failed_micros": t["failed_micros"],
            "retries_micros": t["retries_micros"],
            "excluded_by_policy_micros": excluded,
            "billable_micros": billable,
            "free_allowance_micros": free,
            "unpriced_micros": unpriced,
            "charged_micros": billable - free - unpriced,
            "amount_cents": sum(ln.amount_cents for ln in lines),
        })
    schema = {c: pl.Int64 for c in FUNNEL_COLUMNS}
    schema["meter"] = pl.String
    return pl.DataFrame(out, schema=schema, orient="row") if out else pl.DataFrame(schema=schema)


def _free_micros(line) -> int:
    if line.meter == TRUE_UP:
        return 0
    total = sum(c.quantity for c in line.tiers if c.unit_price == 0)
    return int(total * 1_000_000)


__all__ = ["FUNNEL_COLUMNS", "FUNNEL_STAGES", "billable_funnel"]
