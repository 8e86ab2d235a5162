"""Budget alerts end to end (SQLite and PostgreSQL): states, crossing dates, CLI exit codes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from metering.alerts import evaluate_alerts
from metering.budgets import CROSSED, FORECAST, OK, create_budget
from metering.cli import main
from metering.pricing import parse_rate_card, store_rate_card
from queries.schema import organizations, usage_daily

CARD_TOML = """
currency = "USD"
effective_from = "2026-01"
[meters.lookup.production]
tiers = [{ up_to = 2000, unit_price = "1.00" }, { unit_price = "0.50" }]
"""
AS_OF = "2026-03-10T18:00:00Z"


def _seed(engine) -> None:
    """acme: p1 60 and p2 40 lookups a day on March 1-10 (org $100/day until 2000 units); calm: 1/day."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(10):
        d = date(2026, 3, 1) + timedelta(days=i)
        for org, project, q in (("acme", "p1", 60), ("acme", "p2", 40), ("calm", "c1", 1)):
            rows.append({
                "day": d, "org": org, "project": project, "environment": "production",
                "api_key": f"{project}-key",
                "meter": "lookup", "workload": "underwriting", "channel": "api", "status": "success",
                "retry": False, "eligible": True, "quantity_micros": q * 1_000_000, "events": q,
            })
        # failed traffic is never counted
        rows.append({**rows[-2], "status": "failed", "eligible": False, "quantity_micros": 10**9})
    with engine.begin() as conn:
        conn.execute(organizations.insert(),
                     [{"org": o, "name": o, "created_at": now} for o in ("acme", "calm")])
        conn.execute(usage_daily.insert(), rows)
    store_rate_card(engine, parse_rate_card(CARD_TOML), loaded_by="test")


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_states_and_dates_for_org_and_project_scopes(engine):
    _seed(engine)
    create_budget(engine, {"acme"}, org="acme", scope="org", scope_value="acme", amount_cents=200000)
    create_budget(engine, {"acme"}, org="acme", scope="project", scope_value="p1", amount_cents=30000)
    create_budget(engine, {"acme"}, org="acme", scope="project", scope_value="p2", amount_cents=100000,
                  thresholds=[50, 100])
    ev = {e.budget.scope_value: e for e in evaluate_alerts(engine, {"acme"}, date(2026, 3, 10))}
    # org: $100/day cumulative; actual $1,000 at day 10; run-rate 100/day -> $1,600 on day 16,
    # $2,000 on day 20 (2000 units, still the $1 tier)
    org = ev["acme"]
    assert (org.actual_cents, org.projected_cents) == (100000, 255000)  # 3100 units: 2000 + 1100 * 0.5
    assert [(t.percent, t.state, t.on) for t in org.thresholds] == [
        (50, CROSSED, date(2026, 3, 10)), (80, FORECAST, date(2026, 3, 16)),
        (100, FORECAST, date(2026, 3, 20)),
    ]
    # p1: 60% of the quantity -> $60/day: $150 reached on day 3, $240 day 4, $300 day 5
    p1 = ev["p1"]
    assert p1.actual_cents == 60000
    assert [(t.state, t.on) for t in p1.thresholds] == [
        (CROSSED, date(2026, 3, 3)), (CROSSED, date(2026, 3, 4)), (CROSSED, date(2026, 3, 5)),
    ]
    # p2: 40% share of the org projection; $500 at 40 * t >= 500 -> day 13; $1,000 only after the
    # org passes 2000 units (day 20): 0.4 * (2000 + 50 * (t - 20)) >= 1000 -> day 30
    p2 = ev["p2"]
    assert p2.actual_cents == 40000 and p2.projected_cents == 102000  # 0.4 * $2,550
    assert [(t.state, t.on) for t in p2.thresholds] == [
        (FORECAST, date(2026, 3, 13)), (FORECAST, date(2026, 3, 30)),
    ]
    assert any("month-to-date share (40.0%)" in n for n in p2.notes)


def test_cli_exit_codes(engine, capsys):
    _seed(engine)
    url = _url(engine)
    assert main(["--database-url", url, "budgets", "set", "--org", "acme", "--amount", "500"]) == 0
    assert main(["--database-url", url, "budgets", "set", "--org", "calm", "--amount", "1000",
                 "--thresholds", "50,100"]) == 0
    capsys.readouterr()
    # acme: $1,000 spent against $500: crossed -> exit 1
    assert main(["--database-url", url, "alerts", "--as-of", AS_OF, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["crossed"] == 1 and doc["period"] == "2026-03"
    acme = next(b for b in doc["budgets"] if b["org"] == "acme")
    assert [(t["percent"], t["state"], t["on"]) for t in acme["thresholds"]] == [
        (50, "crossed", "2026-03-03"), (80, "crossed", "2026-03-04"), (100, "crossed", "2026-03-05"),
    ]
    assert acme["actual_usd"] == 1000.00
    # calm: $10 of $1,000, forecast $31: nothing crossed -> exit 0
    assert main(["--database-url", url, "alerts", "--org", "calm", "--as-of", AS_OF]) == 0
    out = capsys.readouterr().out
    assert "no threshold crossed" in out and "ok" in out
    # bad input -> 2
    assert main(["--database-url", url, "alerts", "--org", "nobody", "--as-of", AS_OF]) == 2
    assert main(["--database-url", url, "alerts", "--as-of", "2026-03-10T18:00:00"]) == 2
    assert "offset" in capsys.readouterr().err
    # editing the budget upward clears the alert
    assert main(["--database-url", url, "budgets", "set", "--org", "acme", "--amount", "100000"]) == 0
    assert main(["--database-url", url, "alerts", "--as-of", AS_OF]) == 0


def test_cli_budgets_set_list_delete(engine, capsys):
    _seed(engine)
    url = _url(engine)
    assert main(["--database-url", url, "budgets", "set", "--org", "acme", "--scope", "project",
                 "--value", "p1", "--amount", "12.50", "--thresholds", "80,50"]) == 2
    assert "thresholds: percents must be ascending" in capsys.readouterr().err
    assert main(["--database-url", url, "budgets", "set", "--org", "acme", "--scope", "project",
                 "--value", "zzz", "--amount", "12.50"]) == 2
    assert "scope_value: project 'zzz' does not exist" in capsys.readouterr().err
    assert main(["--database-url", url, "budgets", "set", "--org", "acme", "--scope", "project",
                 "--value", "p1", "--amount", "12.50", "--name", "P1"]) == 0
    capsys.readouterr()
    assert main(["--database-url", url, "budgets", "list", "--json"]) == 0
    (b,) = json.loads(capsys.readouterr().out)
    assert (b["scope"], b["scope_value"], b["amount_usd"], b["thresholds"], b["name"]) == (
        "project", "p1", 12.5, [50, 80, 100], "P1")
    assert main(["--database-url", url, "budgets", "delete", "--org", "acme", "--id", str(b["id"])]) == 0
    assert main(["--database-url", url, "budgets", "delete", "--org", "acme", "--id", str(b["id"])]) == 2
    assert main(["--database-url", url, "budgets", "list"]) == 0
    assert "no budgets" in capsys.readouterr().out


def test_alerts_help_states_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["alerts", "--help"])
    out = capsys.readouterr().out
    assert "0 no threshold crossed" in out and "1 some threshold crossed" in out
    assert OK == "ok"
