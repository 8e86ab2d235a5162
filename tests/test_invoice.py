"""The invoice to the cent: hand-computed lines, discount, half-up rounding, minimum commit,
webhook policy, failed calls and retries excluded, unpriced pairs, month-to-date preview."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from metering.invoice import (
    NOT_BILLED_BY_POLICY,
    TRUE_UP,
    BadAsOf,
    UnknownOrg,
    billable_quantities,
    build_invoice,
    invoice_document,
    parse_as_of,
    price_quantities,
)
from metering.periods import BadPeriod
from metering.pricing import parse_rate_card, store_rate_card
from tests.billing_helpers import MARCH, insert_usage, row, usage_frame

D = Decimal

CARD_TEXT = """
currency = "USD"
effective_from = "2026-01"

[meters.lookup.production]
tiers = [{ up_to = 10000, unit_price = "0.30" }, { up_to = 50000, unit_price = "0.22" },
         { unit_price = "0.15" }]
[meters.lookup.sandbox]
tiers = [{ up_to = 500, unit_price = "0" }, { unit_price = "0.05" }]
[meters.webhook_delivery.production]
tiers = [{ unit_price = "0.001" }]
[meters.report_job.production]
tiers = [{ unit_price = "0.01" }]

[orgs.acme-insurance]
discount_percent = "10"
webhooks_billable = true
[orgs.half-off]
discount_percent = "50"
[orgs.borealis-health]
minimum_commit = "100.00"
"""
CARD = parse_rate_card(CARD_TEXT)


def mixed_usage(org: str) -> list[dict]:
    """Hand-sized usage: eligible, failed, retried and unpriced traffic."""
    return [
        row(org=org, quantity=6001, project="a"),
        row(org=org, quantity=4000, project="b", day=date(2026, 3, 20)),
        row(org=org, quantity=500, status="failed"),                           # never counted
        row(org=org, quantity=600, environment="sandbox", project="sbx"),
        row(org=org, quantity=1000, meter="webhook_delivery", channel="delivery"),
        row(org=org, quantity=300, meter="webhook_delivery", channel="delivery", retry=True),  # retries
        row(org=org, quantity=50, meter="webhook_delivery", channel="delivery", status="failed"),
        row(org=org, quantity=7, meter="expanded_history"),                    # unpriced pair
        row(org=org, quantity=99, day=date(2026, 2, 28)),                      # other period
        row(org="someone-else", quantity=123),                                 # other org
    ]


def amounts(inv) -> dict:
    return {ln.line_id: ln.amount_cents for ln in inv.lines}


def test_invoice_by_hand_with_discount_and_billable_webhooks():
    inv = build_invoice(usage_frame(mixed_usage("acme-insurance")), CARD, "acme-insurance", MARCH)
    # lookup/production: 10001 units = 3000.00 + 1 * 0.22 = 3000.22, less 10% = 2700.198 -> 2700.20
    # lookup/sandbox: 500 free + 100 * 0.05 = 5.00, less 10% = 4.50
    # webhook_delivery/production: 1000 first attempts * 0.001 = 1.00, less 10% = 0.90
    # expanded_history/production: not on the card -> 0, flagged
    assert amounts(inv) == {
        "lookup/sandbox": 450,
        "lookup/production": 270020,
        "expanded_history/production": 0,
        "webhook_delivery/production": 90,
    }
    assert inv.total_cents == 270020 + 450 + 90 == inv.subtotal_cents
    lp = inv.line("lookup", "production")
    assert lp.quantity == D(10001) and lp.quantity_micros == 10001 * 10**6
    assert lp.gross == D("3000.22") and lp.gross_cents == 300022 and lp.discount_cents == 30002
    assert [(t.tier, t.quantity, t.amount) for t in lp.tiers] == [(1, D(10000), D("3000.00")),
                                                                 (2, D(1), D("0.22"))]
    assert lp.effective_unit_rate == D("0.269993")  # 2700.20 / 10001, to a millionth
    eh = inv.line("expanded_history", "production")
    assert eh.unpriced and eh.amount_cents == 0 and eh.quantity == 7
    wh = inv.line("webhook_delivery", "production")
    assert wh.billed and wh.quantity == 1000  # retries (300) and failed (50) excluded


def test_webhooks_counted_but_not_billed_by_default_policy():
    inv = build_invoice(usage_frame(mixed_usage("delta-payroll")), CARD, "delta-payroll", MARCH)
    wh = inv.line("webhook_delivery", "production")
    assert wh.quantity == 1000 and wh.amount_cents == 0
    assert not wh.billed and wh.note == NOT_BILLED_BY_POLICY and not wh.unpriced
    assert amounts(inv)["lookup/production"] == 300022  # no discount
    assert inv.total_cents == 300022 + 500


def test_billable_quantities_exclude_failed_and_retries():
    q = billable_quantities(usage_frame(mixed_usage("acme-insurance")), CARD, "acme-insurance", MARCH)
    got = {(r["meter"], r["environment"]): r["quantity_micros"] for r in q.iter_rows(named=True)}
    assert got == {
        ("lookup", "production"): 10001 * 10**6,
        ("lookup", "sandbox"): 600 * 10**6,
        ("webhook_delivery", "production"): 1000 * 10**6,
        ("expanded_history", "production"): 7 * 10**6,
    }


@pytest.mark.parametrize(
    ("quantity", "cents"),
    [
        (D(1), 1),     # 0.01 * 50% = 0.005 -> 0.01 (half up; banker's rounding would give 0.00)
        (D(5), 3),     # 0.025 -> 0.03 (banker's: 0.02)
        (D(3), 2),     # 0.015 -> 0.02
        (D(4), 2),     # 0.020 exactly
        (D("0.3"), 0),  # 0.0015 -> 0.00
    ],
)
def test_discount_then_round_half_up(quantity, cents):
    inv = price_quantities({("report_job", "production"): quantity}, CARD, "half-off")
    assert inv.line("report_job", "production").amount_cents == cents


def test_fractional_quantities():
    rows = [row(org="delta-payroll", quantity="0.5"), row(org="delta-payroll", quantity="0.25", api_key="k2")]
    inv = build_invoice(usage_frame(rows), CARD, "delta-payroll", MARCH)
    assert inv.line("lookup", "production").quantity == D("0.75")
    assert amounts(inv) == {"lookup/production": 23}  # 0.75 * 0.30 = 0.225 -> 0.23 half up
    inv = build_invoice(usage_frame([{**r, "org": "acme-insurance"} for r in rows]), CARD,
                        "acme-insurance", MARCH)
    assert amounts(inv) == {"lookup/production": 20}  # 0.225 * 0.9 = 0.2025 -> 0.20


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        (9999, {"report_job/production": 9999, TRUE_UP: 1}),   # 99.99 below 100.00: true-up 0.01
        (10000, {"report_job/production": 10000}),              # equal: no true-up line
        (10001, {"report_job/production": 10001}),              # above: none
        (0, {TRUE_UP: 10000}),                                  # no usage: the whole minimum
    ],
)
def test_minimum_commit(jobs, expected):
    inv = price_quantities({("report_job", "production"): D(jobs)}, CARD, "borealis-health")
    assert amounts(inv) == expected
    assert inv.total_cents == max(jobs, 10000)
    assert inv.true_up_cents == max(0, 10000 - jobs)
    if jobs < 10000:
        assert inv.lines[-1].meter == TRUE_UP and inv.lines[-1].environment is None


def test_no_card_prices_everything_at_zero_flagged():
    inv = build_invoice(usage_frame(mixed_usage("acme-insurance")), None, "acme-insurance", MARCH)
    assert inv.total_cents == 0 and all(ln.unpriced for ln in inv.lines) and len(inv.lines) == 4


def test_price_quantities_rejects_unknown_meter_and_float():
    with pytest.raises(ValueError, match="unknown meter"):
        price_quantities({("lookups", "production"): D(1)}, CARD, "x")
    with pytest.raises(ValueError, match="float"):
        price_quantities({("lookup", "production"): 1.5}, CARD, "x")


def test_as_of_counts_whole_days_up_to_its_utc_date():
    rows = [row(org="delta-payroll", quantity=q, day=date(2026, 3, d))
            for d, q in ((1, 1), (15, 10), (16, 100), (31, 1000))]
    usage = usage_frame(rows)
    mid = datetime(2026, 3, 15, 8, 0, tzinfo=UTC)
    inv = build_invoice(usage, CARD, "delta-payroll", MARCH, as_of=mid)
    assert inv.line("lookup", "production").quantity == 11 and inv.usage_through == date(2026, 3, 15)
    # 02:00 on the 16th at +05:00 is 21:00 UTC on the 15th
    assert build_invoice(usage, CARD, "delta-payroll", MARCH,
                         parse_as_of("2026-03-16T02:00:00+05:00")).line("lookup", "production").quantity == 11
    late = build_invoice(usage, CARD, "delta-payroll", MARCH, parse_as_of("2026-05-01T00:00:00Z"))
    assert late.line("lookup", "production").quantity == 1111
    with pytest.raises(BadAsOf, match="before period"):
        build_invoice(usage, CARD, "delta-payroll", MARCH, parse_as_of("2026-02-28T23:59:59Z"))
    with pytest.raises(BadAsOf, match="offset"):
        parse_as_of("2026-03-15T08:00:00")
    with pytest.raises(BadAsOf):
        parse_as_of("yesterday")


def test_invoice_document_from_the_store(engine):
    insert_usage(engine, mixed_usage("acme-insurance"))
    store_rate_card(engine, CARD)
    doc = invoice_document(engine, "acme-insurance", MARCH)
    assert doc["total"] == D("2705.60") and doc["currency"] == "USD"
    assert doc["rate_card"]["effective_from"] == "2026-01"
    assert [ln["line"] for ln in doc["lines"]] == [
        "lookup/sandbox", "lookup/production", "expanded_history/production", "webhook_delivery/production"]
    assert doc["terms"] == {"discount_percent": D(10), "minimum_commit": D("0.00"), "webhooks_billable": True}
    assert doc["discount"] == D("300.02") + D("0.50") + D("0.10")
    assert doc["projection"] is None and doc["period_status"] == "closed"
    assert any("expanded_history/production is unpriced" in w for w in doc["warnings"])
    # every breakdown sums to the total
    for dim, parts in doc["breakdowns"].items():
        assert sum(p["amount"] for p in parts) == doc["total"], dim
    project = {p["project"]: p["amount"] for p in doc["breakdowns"]["project"]}
    # lookup/production 270020 cents split 6001:4000:
    #   a: 270020 * 6001 = 1620390020 = 10001 * 162022 + 7998  -> floor 162022, remainder 7998
    #   b: 270020 * 4000 = 1080080000 = 10001 * 107997 + 2003  -> floor 107997, remainder 2003
    #   floors sum to 270019: the one cent left goes to a (larger remainder)
    # the webhook line (0.90) is all project p1's, lookup/sandbox (4.50) all sbx's
    assert project == {"a": D("1620.23"), "b": D("1079.97"), "sbx": D("4.50"), "p1": D("0.90")}
    assert [p["project"] for p in doc["breakdowns"]["project"]] == ["a", "b", "sbx", "p1"]
    assert [d["day"] for d in doc["breakdowns"]["day"]] == ["2026-03-02", "2026-03-20"]
    funnel = {f["meter"]: f for f in doc["funnel"]}
    assert funnel["lookup"]["traffic"] == 11101 and funnel["lookup"]["failed"] == 500
    assert funnel["lookup"]["free_allowance"] == 500 and funnel["lookup"]["charged"] == 10101


def test_invoice_document_errors(engine):
    insert_usage(engine, [row(org="acme-insurance")], orgs=["no-usage-yet"])
    with pytest.raises(UnknownOrg):
        invoice_document(engine, "nobody", MARCH)
    with pytest.raises(UnknownOrg):
        invoice_document(engine, "acme-insurance", MARCH, orgs={"someone-else"})  # not visible
    with pytest.raises(BadPeriod):
        invoice_document(engine, "acme-insurance", "2026-3")
    # a registered org with no usage and no card: an empty invoice, not an error
    doc = invoice_document(engine, "no-usage-yet", MARCH)
    assert doc["lines"] == [] and doc["total"] == 0
    assert doc["warnings"] == ["no rate card is effective for 2026-03: every line is unpriced"]


@pytest.mark.parametrize("demo", ["demo_sqlite_url", "demo_pg_url"])
@pytest.mark.parametrize("closed", [False, True])
def test_document_from_the_overview_equals_the_stored_document(request, demo, demo_period, closed):
    """The app builds the invoice page's document from its overview (no second load, pricing or
    projection); it must equal the CLI's document read from the store, projection included."""
    from datetime import UTC, datetime

    from metering.forecast import history_start, projection_json
    from metering.invoice import document_from
    from metering.overview import billing_overview
    from metering.periods import period_bounds, shift_period, utcnow
    from metering.pricing import card_for_period
    from queries.engine import make_engine
    from queries.usage import load_usage

    eng = make_engine(request.getfixturevalue(demo))
    period = shift_period(demo_period, -1) if closed else demo_period
    compare, today = shift_period(period, -1), utcnow().date()
    for org in ("acme-insurance", "delta-payroll"):
        usage = load_usage(eng, [org], min(period_bounds(compare)[0], history_start(period)),
                           period_bounds(period)[1])
        card = card_for_period(eng, period)
        ov = billing_overview(usage, card, org, period, compare, today,
                              previous_card=card_for_period(eng, compare))
        as_of = datetime.combine(ov.as_of, datetime.min.time(), tzinfo=UTC) if ov.is_open else None
        stored = invoice_document(eng, org, period, as_of, orgs=[org])
        assert (stored["projection"] is None) == closed
        assert document_from(org, period, as_of, card, ov.usage, ov.invoice,
                             projection_json(ov.projection) if ov.projection else None) == stored
    eng.dispose()
