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


def test_budget_projection_is_the_invoice_projection(demo_period, capsys, tmp_path):
    """One projection everywhere: an org budget's projected spend equals the invoice JSON's (and so
    the app's) projected total, to the cent. On this demo (300 days, seed 3) alerts reading one
    period less of history projected a different total than the invoice (it fails on the old code)."""
    from datetime import UTC, datetime

    from metering.alerts import evaluate_alerts
    from metering.budgets import create_budget
    from queries.engine import make_engine

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["--database-url", url, "init-db"]) == 0
    assert main(["--database-url", url, "demo", "--days", "300", "--events", "80000", "--seed", "3"]) == 0
    orgs = ("acme-insurance", "cobalt-lending", "delta-payroll")
    eng = make_engine(url)
    for org in orgs:
        create_budget(eng, [org], org=org, scope="org", scope_value=org, amount_cents=10**9, thresholds="50")
    evals = {ev.budget.org: ev for ev in evaluate_alerts(eng, orgs, datetime.now(UTC).date())}
    eng.dispose()
    for org in orgs:
        capsys.readouterr()
        assert main(["--database-url", url, "invoice", "--org", org, "--period", demo_period, "--json"]) == 0
        p = json.loads(capsys.readouterr().out, parse_float=Decimal)["projection"]
        assert evals[org].projected_cents == int(p["projected_total_usd"] * 100), org
