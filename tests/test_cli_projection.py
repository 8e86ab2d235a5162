"""`invoice --as-of` carries the projection to period end; a closed period's invoice has none."""

from __future__ import annotations

import json
from decimal import Decimal

from metering.cli import main
from metering.periods import period_bounds, shift_period


def _doc(url, capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["--database-url", url, "invoice", "--org", "acme-insurance", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out, parse_float=Decimal)


def test_preview_has_projection_consistent_with_month_to_date(demo_sqlite_url, demo_period, capsys):
    closed = shift_period(demo_period, -1)
    start, _ = period_bounds(closed)
    as_of = f"{start.replace(day=14).isoformat()}T12:00:00Z"
    doc = _doc(demo_sqlite_url, capsys, "--period", closed, "--as-of", as_of)
    p = doc["projection"]
    assert p is not None and p["days_elapsed"] == 14
    # month to date of the projection is the preview's own total, to the cent
    assert p["mtd_usd"] == doc["total"]
    assert p["projected_low_usd"] <= p["projected_total_usd"] <= p["projected_high_usd"]
    assert p["projected_total_usd"] >= doc["total"]
    full = _doc(demo_sqlite_url, capsys, "--period", closed)
    assert full["projection"] is None  # closed and final
    # the projection of a mid-month cut lands in a sane range of the actual final invoice
    assert abs(p["projected_total_usd"] - full["total"]) / full["total"] < Decimal("0.5")
