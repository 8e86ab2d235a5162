"""Test helpers for the pricing/invoice tests: build usage frames and store rollup rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import sqlalchemy as sa

from metering.domain import QUANTITY_SCALE, USAGE_SCHEMA, WEBHOOK_METER
from queries.schema import organizations, usage_daily

MARCH = "2026-03"

DEFAULTS = dict(
    day=date(2026, 3, 2), org="acme-insurance", project="p1", environment="production",
    api_key="k1", meter="lookup", workload="underwriting", channel="api", status="success",
    retry=False,
)


def row(quantity=1, events=None, **kw) -> dict:
    """One rollup row; eligible follows DOMAIN.md (success, and attempt 1 for webhooks)."""
    r = {**DEFAULTS, **kw}
    r["eligible"] = r["status"] == "success" and not (r["meter"] == WEBHOOK_METER and r["retry"])
    micros = Decimal(str(quantity)) * QUANTITY_SCALE
    assert micros == micros.to_integral_value(), "quantities are whole micro-units"
    r["quantity_micros"] = int(micros)
    r["events"] = int(events if events is not None else max(1, int(Decimal(str(quantity)))))
    return r


def usage_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=USAGE_SCHEMA)
    return pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row").select(list(USAGE_SCHEMA))


def insert_usage(engine: sa.Engine, rows: list[dict], orgs=()) -> None:
    """Register the orgs and insert the rollup rows (merging rows with the same key)."""
    merged: dict[tuple, dict] = {}
    for r in rows:
        key = tuple(r[k] for k in ("day", "org", "project", "environment", "api_key", "meter",
                                   "workload", "channel", "status", "retry"))
        if key in merged:
            merged[key]["quantity_micros"] += r["quantity_micros"]
            merged[key]["events"] += r["events"]
        else:
            merged[key] = dict(r)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for org in sorted({r["org"] for r in rows} | set(orgs)):
            conn.execute(sa.insert(organizations).values(org=org, name=org, created_at=now))
        if merged:
            conn.execute(sa.insert(usage_daily), list(merged.values()))


def engine_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)
