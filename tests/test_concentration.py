"""spend_concentration and driven_by on small hand-made spend frames (answers worked by hand)."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from metering.concentration import driven_by, spend_concentration


def _spend(rows):
    return pl.DataFrame(rows, schema=["project", "meter", "workload", "amount_cents"], orient="row")


SPEND = _spend([
    # production-underwriting: 6200 = 4000 lookups + 1800 expanded history + 400 webhooks
    ("production-underwriting", "lookup", "underwriting", 4000),
    ("production-underwriting", "expanded_history", "underwriting", 1800),
    ("production-underwriting", "webhook_delivery", "underwriting", 400),
    # sandbox-workforce-review: 2500
    ("sandbox-workforce-review", "lookup", "workforce-review", 2500),
    # finance: 1300 = 1000 report jobs + 300 exports
    ("finance", "report_job", "finance-package", 1000),
    ("finance", "export_records", "bulk-export", 300),
])  # total 10000 cents


def test_shares_pareto_and_hhi():
    c = spend_concentration(SPEND, "project", top_n=2)
    assert c.total_cents == 10000
    assert c.parts["project"].to_list() == ["production-underwriting", "sandbox-workforce-review", "finance"]
    assert c.parts["amount_cents"].to_list() == [6200, 2500, 1300]
    assert c.parts["rank"].to_list() == [1, 2, 3]
    assert c.parts["share"].to_list() == pytest.approx([0.62, 0.25, 0.13])
    assert c.parts["cumulative_share"].to_list() == pytest.approx([0.62, 0.87, 1.0])
    assert c.top == "production-underwriting" and c.top_cents == 6200
    assert c.top_share == Decimal("0.620000")
    # top 2: (6200 + 2500) / 10000
    assert c.top_n_share == Decimal("0.870000")
    # HHI = 0.62^2 + 0.25^2 + 0.13^2 = 0.3844 + 0.0625 + 0.0169 = 0.4638
    assert c.hhi == Decimal("0.463800")
    assert c.hhi_points == Decimal("4638.00")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_hhi_of_equal_shares_is_one_over_n(n):
    spend = pl.DataFrame({"api_key": [f"k{i}" for i in range(n)], "amount_cents": [333] * n})
    c = spend_concentration(spend, "api_key", top_n=1)
    one_over_n = (Decimal(1) / Decimal(n)).quantize(Decimal("0.000001"))
    assert c.hhi == one_over_n
    assert c.top_share == one_over_n
    assert c.hhi_points == (Decimal(10000) / Decimal(n)).quantize(Decimal("0.01"))
    # ties: the key that sorts first is the top driver
    assert c.top == "k0"


def test_top_n_larger_than_parts_is_everything_and_rows_are_summed():
    spend = pl.DataFrame({"workload": ["a", "b", "a"], "amount_cents": [1, 2, 3]})
    c = spend_concentration(spend, "workload", top_n=10)
    assert c.parts["amount_cents"].to_list() == [4, 2]
    assert c.top_n_share == Decimal("1.000000")
    # (4/6)^2 + (2/6)^2 = 16/36 + 4/36 = 20/36 = 0.5555...
    assert c.hhi == Decimal("0.555556")
    assert c.hhi_points == Decimal("5555.56")


def test_zero_total_has_no_shares():
    spend = pl.DataFrame({"project": ["a", "b"], "amount_cents": [0, 0]})
    c = spend_concentration(spend, "project")
    assert c.total_cents == 0 and c.hhi is None and c.top_share is None
    assert c.parts["share"].null_count() == 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown dimension 'colour'"):
        spend_concentration(SPEND, "colour")
    with pytest.raises(ValueError, match="no column 'amount_cents'"):
        spend_concentration(SPEND.drop("amount_cents"), "project")
    with pytest.raises(ValueError, match="negative"):
        spend_concentration(pl.DataFrame({"project": ["a"], "amount_cents": [-1]}), "project")
    with pytest.raises(ValueError, match="integer cents"):
        spend_concentration(pl.DataFrame({"project": ["a"], "amount_cents": [1.5]}), "project")


def test_driven_by_names_top_meters_and_workloads():
    # 6200 of 10000 = 62%; lookups 4000/6200 = 64.5% < 80%, + expanded 1800 -> 93.5% >= 80%: stop
    assert driven_by(SPEND, "project") == (
        "production-underwriting: 62% of spend, driven by HRS lookups and Expanded history (underwriting)"
    )
    # finance: 1300/10000 = 13%; report jobs 1000/1300 = 76.9% < 80% -> exports too; workloads same
    assert driven_by(SPEND, "project", part="finance") == (
        "finance: 13% of spend, driven by Report jobs and Export records (finance-package and bulk-export)"
    )


def test_driven_by_on_meter_dimension_names_workloads_only():
    # lookup: 6500 / 10000 = 65%; underwriting 4000/6500 = 61.5%, workforce-review 2500 -> 100%
    assert driven_by(SPEND, "meter") == (
        "HRS lookups: 65% of spend, driven by underwriting and workforce-review"
    )
    # max_drivers=1 names the largest only
    assert driven_by(SPEND, "meter", max_drivers=1) == "HRS lookups: 65% of spend, driven by underwriting"


def test_driven_by_rounds_half_up_and_rejects_unknown_part():
    spend = pl.DataFrame({"project": ["a", "b"], "meter": ["lookup", "lookup"], "amount_cents": [125, 875]})
    # a: 125 / 1000 = 12.5% -> 13% (half up)
    assert driven_by(spend, "project", part="a") == "a: 13% of spend, driven by HRS lookups"
    with pytest.raises(ValueError, match="project 'zzz' has no spend"):
        driven_by(spend, "project", part="zzz")
