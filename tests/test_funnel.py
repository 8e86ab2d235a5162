"""Billable funnel per meter: hand-computed stages that add up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering.funnel import FUNNEL_COLUMNS, billable_funnel
from metering.invoice import build_invoice
from tests.billing_helpers import MARCH, row, usage_frame
from tests.test_allocate import CARD, PROPS, usage_rows
from tests.test_invoice import CARD as INVOICE_CARD


def funnel_rows(org: str) -> list[dict]:
    return [
        row(org=org, quantity=1000),
        row(org=org, quantity=40, status="failed"),
        row(org=org, quantity=600, environment="sandbox"),
        row(org=org, quantity=200, meter="webhook_delivery"),
        row(org=org, quantity=30, meter="webhook_delivery", retry=True),
        row(org=org, quantity=5, meter="webhook_delivery", status="failed"),
        row(org=org, quantity=2, meter="webhook_delivery", status="failed", retry=True),
        row(org=org, quantity=7, meter="expanded_history"),
        row(org=org, quantity=1, meter="expanded_history", status="failed"),
        row(org=org, quantity=3, meter="report_job", status="failed"),
    ]


def by_meter(frame) -> dict:
    return {r["meter"]: {k: v for k, v in r.items() if k != "meter"} for r in frame.iter_rows(named=True)}


M = 10**6


def test_funnel_by_hand_webhooks_not_billed():
    usage = usage_frame(funnel_rows("delta-payroll"))
    inv = build_invoice(usage, INVOICE_CARD, "delta-payroll", MARCH)
    funnel = billable_funnel(usage, inv)
    assert funnel.columns == list(FUNNEL_COLUMNS)
    assert funnel["meter"].to_list() == ["lookup", "expanded_history", "report_job", "webhook_delivery"]
    got = by_meter(funnel)
    assert got["lookup"] == dict(
        traffic_events=1640, traffic_micros=1640 * M, failed_micros=40 * M, retries_micros=0,
        excluded_by_policy_micros=0, billable_micros=1600 * M, free_allowance_micros=500 * M,
        unpriced_micros=0, charged_micros=1100 * M,
        amount_cents=30000 + 500,  # 1000 * 0.30 + (600 - 500) * 0.05
    )
    assert got["webhook_delivery"] == dict(
        traffic_events=237, traffic_micros=237 * M, failed_micros=7 * M, retries_micros=30 * M,
        excluded_by_policy_micros=200 * M, billable_micros=0, free_allowance_micros=0,
        unpriced_micros=0, charged_micros=0, amount_cents=0,
    )
    assert got["expanded_history"] == dict(
        traffic_events=8, traffic_micros=8 * M, failed_micros=1 * M, retries_micros=0,
        excluded_by_policy_micros=0, billable_micros=7 * M, free_allowance_micros=0,
        unpriced_micros=7 * M, charged_micros=0, amount_cents=0,
    )
    assert got["report_job"]["traffic_micros"] == 3 * M and got["report_job"]["billable_micros"] == 0


def test_funnel_webhooks_billable():
    usage = usage_frame(funnel_rows("acme-insurance"))
    inv = build_invoice(usage, INVOICE_CARD, "acme-insurance", MARCH)
    wh = by_meter(billable_funnel(usage, inv))["webhook_delivery"]
    assert wh["excluded_by_policy_micros"] == 0 and wh["billable_micros"] == 200 * M
    assert wh["charged_micros"] == 200 * M and wh["amount_cents"] == 18  # 200 * 0.001 less 10%


@PROPS
@given(rows=usage_rows, org=st.sampled_from(["acme-insurance", "borealis-health", "delta-payroll"]))
def test_funnel_stages_add_up(rows, org):
    usage = usage_frame(rows)
    inv = build_invoice(usage, CARD, org, MARCH)
    funnel = billable_funnel(usage, inv)
    for r in funnel.iter_rows(named=True):
        assert r["traffic_micros"] == (r["failed_micros"] + r["retries_micros"]
                                       + r["excluded_by_policy_micros"] + r["billable_micros"])
        assert r["billable_micros"] == r["free_allowance_micros"] + r["unpriced_micros"] + r["charged_micros"]
        assert min(r[c] for c in FUNNEL_COLUMNS if c != "meter") >= 0
    own = [r for r in rows if r["org"] == org]
    assert funnel["traffic_micros"].sum() == sum(r["quantity_micros"] for r in own)
    assert funnel["amount_cents"].sum() == inv.subtotal_cents
