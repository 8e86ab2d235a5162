"""`summary` and `invoice` through metering.cli.main on SQLite and PostgreSQL: the DOMAIN.md JSON
shape, values equal to hand or independent computations, CSV, --as-of, and exit 2 on bad input."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import polars as pl
import pytest

from metering.cli import main
from metering.pricing import parse_rate_card
from tests.billing_helpers import engine_url, insert_usage, row
from tests.test_allocate import _independent_cents

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CARD = ROOT / "pricing" / "default.toml"
D = Decimal
SUMMARY_KEYS = ["period", "lookups", "expanded_history_calls", "report_jobs", "webhook_deliveries",
                "project_breakdown"]


def acme_rows() -> list[dict]:
    org = "acme-insurance"
    d3, d4 = date(2026, 3, 3), date(2026, 3, 4)
    return [
        row(org=org, project="production-underwriting", quantity=9000, day=d3),
        row(org=org, project="claims-api", quantity=3000, day=d4, api_key="k2"),
        row(org=org, project="claims-api", quantity=25, day=d4, api_key="k2", status="failed"),
        row(org=org, project="sandbox-workforce-review", environment="sandbox", quantity=700, day=d4),
        row(org=org, project="production-underwriting", meter="expanded_history", quantity=150, day=d3),
        row(org=org, project="claims-api", meter="report_job", quantity=3, day=d4,
            workload="finance-package"),
        row(org=org, project="production-underwriting", meter="webhook_delivery", channel="delivery",
            quantity=1000, day=d3),
        row(org=org, project="production-underwriting", meter="webhook_delivery", channel="delivery",
            quantity=40, day=d3, retry=True),
        row(org="cobalt-lending", project="zeta", meter="report_job", quantity=1),
        row(org="cobalt-lending", project="alpha", meter="report_job", quantity=1),
        row(org="borealis-health", project="clinical", quantity=100),
    ]


@pytest.fixture
def db(engine, capsys):
    insert_usage(engine, acme_rows(), orgs=["fjord-screening"])
    url = engine_url(engine)
    assert main(["--database-url", url, "pricing", "load", str(DEFAULT_CARD)]) == 0
    capsys.readouterr()
    return url


def run(url, capsys, *args) -> tuple[int, str, str]:
    code = main(["--database-url", url, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def loads(text: str):
    return json.loads(text, parse_float=Decimal)


def test_summary_json_shape_and_hand_values(db, capsys):
    code, out, _ = run(db, capsys, "summary", "--org", "acme-insurance", "--period", "2026-03", "--json")
    assert code == 0
    doc = loads(out)
    assert list(doc)[:6] == SUMMARY_KEYS
    assert doc["period"] == "2026-03"
    assert (doc["lookups"], doc["expanded_history_calls"], doc["report_jobs"], doc["webhook_deliveries"]) == (
        12700, 150, 3, 1000)  # failed lookups (25) and webhook retries (40) not counted
    assert doc["export_records"] == 0 and doc["assisted_reviews"] == 0 and doc["currency"] == "USD"
    # default card, acme: 10% off, webhooks billable
    # lookup/production 12000 = 10000 * 0.30 + 2000 * 0.22 = 3440.00 -> 3096.00, split 9000:3000
    # lookup/sandbox 700 = 500 free + 200 * 0.05 = 10.00 -> 9.00
    # expanded_history/production 150 * 1.20 = 180.00 -> 162.00
    # report_job/production 3 * 12.00 = 36.00 -> 32.40
    # webhook_delivery/production 1000 * 0.0010 = 1.00 -> 0.90
    assert doc["project_breakdown"] == [
        {"project": "production-underwriting", "cost_usd": D("2484.90")},  # 2322.00 + 162.00 + 0.90
        {"project": "claims-api", "cost_usd": D("806.40")},                # 774.00 + 32.40
        {"project": "sandbox-workforce-review", "cost_usd": D("9.00")},
    ]
    assert doc["total_usd"] == D("3300.30")
    for amount in re.findall(r'"cost_usd": ([0-9.]+)', out):
        assert re.fullmatch(r"[0-9]+\.[0-9]{2}", amount), amount  # exact cents, at most two decimals


def test_summary_ties_by_name_and_true_up_part(db, capsys):
    _, out, _ = run(db, capsys, "summary", "--org", "cobalt-lending", "--period", "2026-03", "--json")
    # 2 jobs * 12.00 less 5% = 22.80, split 1:1 -> 11.40 each; equal costs sort by name
    assert loads(out)["project_breakdown"] == [{"project": "alpha", "cost_usd": D("11.40")},
                                               {"project": "zeta", "cost_usd": D("11.40")}]
    _, out, _ = run(db, capsys, "summary", "--org", "borealis-health", "--period", "2026-03", "--json")
    doc = loads(out)
    # 100 lookups * 0.30 = 30.00, below the 5000.00 minimum: 4970.00 true-up
    assert doc["project_breakdown"] == [{"project": "(minimum commitment)", "cost_usd": D("4970.00")},
                                        {"project": "clinical", "cost_usd": D("30.00")}]
    assert doc["total_usd"] == D("5000.00")
    code, out, _ = run(db, capsys, "summary", "--org", "fjord-screening", "--period", "2026-03", "--json")
    assert code == 0 and loads(out)["project_breakdown"] == [] and loads(out)["lookups"] == 0


def test_invoice_json(db, capsys):
    code, out, _ = run(db, capsys, "invoice", "--org", "acme-insurance", "--period", "2026-03", "--json")
    assert code == 0
    doc = loads(out)
    assert doc["total"] == D("3300.30") and doc["projection"] is None
    assert {ln["line"]: ln["amount"] for ln in doc["lines"]} == {
        "lookup/sandbox": D("9.00"), "lookup/production": D("3096.00"),
        "expanded_history/production": D("162.00"), "report_job/production": D("32.40"),
        "webhook_delivery/production": D("0.90"),
    }
    lp = next(ln for ln in doc["lines"] if ln["line"] == "lookup/production")
    assert [(t["tier"], t["quantity"], t["unit_price"], t["amount"]) for t in lp["tiers"]] == [
        (1, 10000, D("0.30"), D("3000.00")), (2, 2000, D("0.22"), D("440.00"))]
    assert lp["gross"] == D("3440.00") and lp["discount"] == D("344.00")
    assert lp["effective_unit_rate"] == D("0.258000")  # 3096.00 / 12000
    assert set(doc["breakdowns"]) == {"project", "environment", "api_key", "workload", "day"}
    for dim, parts in doc["breakdowns"].items():
        assert sum(p["amount"] for p in parts) == doc["total"], dim
        for p in parts:
            assert sum(ln["amount"] for ln in p["lines"]) == p["amount"]
    env = {p["environment"]: p["amount"] for p in doc["breakdowns"]["environment"]}
    assert env == {"production": D("3291.30"), "sandbox": D("9.00")}
    day = {p["day"]: p["amount"] for p in doc["breakdowns"]["day"]}
    # day 3: 9000/12000 of 3096.00 + 162.00 + 0.90; day 4: the rest
    assert day == {"2026-03-03": D("2322.00") + D("162.90"), "2026-03-04": D("774.00") + D("41.40")}


def test_invoice_as_of_and_csv(db, capsys):
    code, out, _ = run(db, capsys, "invoice", "--org", "acme-insurance", "--period", "2026-03",
                       "--as-of", "2026-03-03T10:00:00Z", "--json")
    doc = loads(out)
    assert code == 0 and doc["usage_through"] == "2026-03-03" and doc["as_of"] == "2026-03-03T10:00:00+00:00"
    # day 3 only: 9000 lookups = 2700.00 -> 2430.00; 162.00; 0.90
    assert doc["total"] == D("2430.00") + D("162.00") + D("0.90")
    code, out, _ = run(db, capsys, "invoice", "--org", "acme-insurance", "--period", "2026-03", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["line"] for r in rows][-1] == "total" and rows[-1]["amount"] == "3300.30"
    assert {r["line"]: r["amount"] for r in rows[:-1]}["lookup/production"] == "3096.00"
    assert sum(D(r["amount"]) for r in rows[:-1]) == D("3300.30")
    code, out, _ = run(db, capsys, "invoice", "--org", "acme-insurance", "--period", "2026-03")
    assert code == 0 and "3300.30" in out and "tier 2 (10000-50000): 2000 x 0.22 = 440.00" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["summary", "--org", "nobody", "--period", "2026-03", "--json"], "unknown org 'nobody'"),
        (["summary", "--org", "acme-insurance", "--period", "2026-3", "--json"], "bad period '2026-3'"),
        (["summary", "--org", "acme-insurance", "--period", "March", "--json"], "bad period 'March'"),
        (["invoice", "--org", "nobody", "--period", "2026-03", "--json"], "unknown org"),
        (["invoice", "--org", "acme-insurance", "--period", "2026-13"], "bad period"),
        (["invoice", "--org", "acme-insurance", "--period", "2026-03", "--as-of", "soon"], "bad --as-of"),
        (["invoice", "--org", "acme-insurance", "--period", "2026-03", "--as-of", "2026-02-01T00:00:00Z"],
         "before period"),
    ],
)
def test_bad_input_exits_2(db, capsys, args, message):
    code, out, err = run(db, capsys, *args)
    assert code == 2 and out == "" and message in err and err.startswith("error: ")


# --- the demo data: acme-insurance for a closed month, against an independent computation ---

def _graduated(q: Decimal, tiers) -> Decimal:
    amount, lower = Decimal(0), Decimal(0)
    for t in tiers:
        upper = q if t.up_to is None else min(q, t.up_to)
        if upper > lower:
            amount += (upper - lower) * t.unit_price
        if t.up_to is None or q <= t.up_to:
            break
        lower = t.up_to
    return amount


def test_demo_summary_for_a_closed_month(engine, capsys):
    from metering.demo import generate_events

    end = datetime(2026, 3, 10, tzinfo=UTC)
    url = engine_url(engine)
    assert main(["--database-url", url, "demo", "--orgs", "6", "--days", "40", "--seed", "7",
                 "--events", "3000", "--end", end.isoformat()]) == 0
    capsys.readouterr()
    code, out, _ = run(url, capsys, "summary", "--org", "acme-insurance", "--period", "2026-02", "--json")
    assert code == 0
    doc = loads(out)
    assert list(doc)[:6] == SUMMARY_KEYS

    # independently: the generated events, filtered and priced here in plain Python
    events = generate_events(orgs=6, days=40, seed=7, end=end, events=3000).filter(
        (pl.col("org") == "acme-insurance") & (pl.col("occurred_at").dt.strftime("%Y-%m") == "2026-02")
        & (pl.col("status") == "success")
        & ((pl.col("meter") != "webhook_delivery") | (pl.col("attempt") == 1))
    )
    per_line: dict = defaultdict(Decimal)
    per_part: dict = defaultdict(Decimal)
    per_meter: dict = defaultdict(Decimal)
    for e in events.iter_rows(named=True):
        q = Decimal(e["quantity"])
        per_line[(e["meter"], e["environment"])] += q
        per_part[(e["meter"], e["environment"], e["project"])] += q
        per_meter[e["meter"]] += q
    assert doc["lookups"] == per_meter["lookup"] and doc["report_jobs"] == per_meter["report_job"]
    assert doc["expanded_history_calls"] == per_meter["expanded_history"]
    assert doc["webhook_deliveries"] == per_meter["webhook_delivery"]
    card = parse_rate_card(DEFAULT_CARD.read_text())
    project_cents: dict = defaultdict(int)
    for (meter, env), q in per_line.items():
        cents = int((_graduated(q, card.tiers(meter, env)) * Decimal("0.9") * 100).quantize(
            Decimal(1), rounding=ROUND_HALF_UP))
        parts = sorted((p, w) for (m, e, p), w in per_part.items() if (m, e) == (meter, env))
        weights = [int(w * 10**6) for _, w in parts]
        for (p, _), c in zip(parts, _independent_cents(cents, [p for p, _ in parts], weights), strict=True):
            project_cents[p] += c
    expected = sorted(project_cents.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(p["project"], p["cost_usd"]) for p in doc["project_breakdown"]] == [
        (p, Decimal(c) / 100) for p, c in expected]
    assert doc["total_usd"] == Fraction(sum(project_cents.values()), 100) and doc["total_usd"] > 0
