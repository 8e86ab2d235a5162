"""Forecast methods, calendar, backtest and the priced projection, against hand-computed values."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from metering.domain import USAGE_SCHEMA
from metering.forecast import (
    HOLT,
    RUN_RATE,
    WEEKDAY_SEASONAL,
    backtest,
    choose_methods,
    daily_quantities,
    forecast_daily,
    invoice_backtest,
    project_invoice,
    projection_json,
    residual_band,
)
from metering.invoice import price_quantities
from metering.jsonout import dumps
from metering.pricing import parse_rate_card

CARD = parse_rate_card("""
currency = "USD"
effective_from = "2025-01"
[meters.lookup.production]
tiers = [{ up_to = 2000, unit_price = "1.00" }, { unit_price = "0.50" }]
[meters.report_job.production]
tiers = [{ unit_price = "3.00" }]
[orgs.disc]
discount_percent = "10"
[orgs.commit]
minimum_commit = "5000.00"
""")


def _oracle(qty: Decimal, tiers: list[tuple[Decimal | None, Decimal]]) -> Decimal:
    """Independent graduated-tier price (exact)."""
    total, lower = Decimal(0), Decimal(0)
    for up_to, price in tiers:
        top = qty if up_to is None else min(qty, up_to)
        if top > lower:
            total += (top - lower) * price
        if up_to is None or qty <= up_to:
            break
        lower = up_to
    return total


LOOKUP_TIERS = [(Decimal(2000), Decimal("1.00")), (None, Decimal("0.50"))]


def _usage(values: dict[tuple[str, str], list[tuple[date, float]]], org: str = "acme") -> pl.DataFrame:
    rows = []
    for (meter, env), pts in values.items():
        for d, q in pts:
            rows.append({
                "day": d, "org": org, "project": "p1", "environment": env, "api_key": "k1", "meter": meter,
                "workload": "underwriting", "channel": "api", "status": "success", "retry": False,
                "eligible": True, "quantity_micros": int(round(q * 1_000_000)), "events": 1,
            })
    return pl.DataFrame(rows, schema=USAGE_SCHEMA)


def _days(start: date, end: date):
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


# --- methods ----------------------------------------------------------------------------------


def test_run_rate_on_constant_series_is_exact():
    fc = forecast_daily([7.0] * 20, date(2026, 3, 20), 11, RUN_RATE)
    assert fc.tolist() == [7.0] * 11


def test_run_rate_is_mean_of_last_seven_days():
    y = [100.0] * 5 + [1, 2, 3, 4, 5, 6, 7]
    assert forecast_daily(y, date(2026, 3, 12), 3, RUN_RATE).tolist() == [4.0, 4.0, 4.0]


def test_weekday_seasonal_reproduces_a_pure_weekly_pattern():
    pattern = {0: 50.0, 1: 40.0, 2: 30.0, 3: 20.0, 4: 10.0, 5: 2.0, 6: 1.0}  # Monday..Sunday
    last = date(2026, 3, 18)  # a Wednesday
    hist_days = [last - timedelta(days=i) for i in range(34, -1, -1)]
    y = [pattern[d.weekday()] for d in hist_days]
    fc = forecast_daily(y, last, 13, WEEKDAY_SEASONAL)
    expected = [pattern[(last + timedelta(days=i)).weekday()] for i in range(1, 14)]
    np.testing.assert_allclose(fc, expected, rtol=1e-12)
    # run-rate cannot: it forecasts the weekly mean every day
    assert forecast_daily(y, last, 13, RUN_RATE).tolist() == [sum(pattern.values()) / 7] * 13


def test_weekday_seasonal_scales_profile_to_recent_level():
    pattern = [10.0, 10, 10, 10, 10, 0, 0]  # weekdays only, starting on a Monday
    y = pattern * 4 + [2 * v for v in pattern]  # the last week doubled
    last = date(2026, 3, 2) + timedelta(days=len(y) - 1)  # the series starts on Monday 2026-03-02
    fc = forecast_daily(y, last, 7, WEEKDAY_SEASONAL)
    # profile over the last 4 weeks: weekday mean 12.5 (three 10s and one 20), weekend 0;
    # overall 62.5/7; level = last 7 days mean = 100/7; forecast = level * 12.5 / (62.5/7) = 20
    np.testing.assert_allclose(fc, [20, 20, 20, 20, 20, 0, 0], rtol=1e-12)


def test_holt_on_constant_series_is_exact_and_never_negative():
    np.testing.assert_allclose(forecast_daily([12.0] * 40, date(2026, 3, 9), 5, HOLT), [12.0] * 5)
    falling = [float(x) for x in range(60, 0, -2)]
    assert (forecast_daily(falling, date(2026, 3, 9), 60, HOLT) >= 0).all()


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown forecast method 'prophet'"):
        forecast_daily([1.0] * 10, date(2026, 3, 9), 3, "prophet")


# --- calendar ---------------------------------------------------------------------------------


def test_daily_calendar_fills_missing_days_with_zero_and_ignores_ineligible_rows():
    u = _usage({
        ("lookup", "production"): [(date(2026, 3, 1), 2), (date(2026, 3, 3), 5), (date(2026, 3, 3), 1)],
        ("report_job", "sandbox"): [(date(2026, 3, 2), 4)],
    })
    failed = u.head(1).with_columns(pl.lit(False).alias("eligible"),
                                    pl.lit(100_000_000, dtype=pl.Int64).alias("quantity_micros"))
    d = daily_quantities(pl.concat([u, failed]))
    assert d.rows() == [
        (date(2026, 3, 1), "lookup", "production", 2_000_000),
        (date(2026, 3, 2), "lookup", "production", 0),
        (date(2026, 3, 3), "lookup", "production", 6_000_000),
        (date(2026, 3, 1), "report_job", "sandbox", 0),
        (date(2026, 3, 2), "report_job", "sandbox", 4_000_000),
        (date(2026, 3, 3), "report_job", "sandbox", 0),
    ]
    assert daily_quantities(u, end=date(2026, 3, 5)).height == 10


# --- backtest ---------------------------------------------------------------------------------


def _step_history():
    """Jan 2026: 10/day on days 1-7, then 20/day. Feb 2026: 10/day on days 1-7, then 5/day."""
    pts = [(d, 10.0 if d.day <= 7 else 20.0) for d in _days(date(2026, 1, 1), date(2026, 1, 31))]
    pts += [(d, 10.0 if d.day <= 7 else 5.0) for d in _days(date(2026, 2, 1), date(2026, 2, 28))]
    return daily_quantities(_usage({("lookup", "production"): pts}))


def test_backtest_rows_by_hand():
    bt = backtest(_step_history(), ["2026-01", "2026-02"], [7], methods=(RUN_RATE,)).sort("period")
    assert bt.select("period", "cut_day", "mtd", "forecast", "actual").rows() == [
        ("2026-01", 7, 70.0, 240.0, 480.0),  # 24 days at the run-rate 10 vs 24 days at 20
        ("2026-02", 7, 70.0, 210.0, 105.0),  # 21 days at 10 vs 21 days at 5
    ]


def test_invoice_mape_by_hand_through_tiers():
    acc = invoice_backtest(_step_history(), ["2026-01", "2026-02"], CARD, "acme",
                           cut_days=(7,), methods=(RUN_RATE,))
    (c7,) = acc
    # Jan: actual 70 + 480 = 550 units -> $550 (first tier); projected 70 + 240 = 310 -> $310
    jan_err = abs(310 - 550) / 550
    # Feb: actual 70 + 105 = 175 -> $175; projected 70 + 210 = 280 -> $280
    feb_err = abs(280 - 175) / 175
    assert c7.periods == 2
    assert c7.mape == pytest.approx((jan_err + feb_err) / 2, abs=1e-12)
    assert c7.mape_run_rate == pytest.approx(c7.mape, abs=1e-12)
    # bands from the other period's residuals (cut days 5..9) miss both actuals (computed by hand:
    # Jan band 240 * [0.437, 0.565] vs 480 actual; Feb band 210 * [1.63, 1.98] vs 105 actual)
    assert c7.coverage == 0.0


def test_coverage_is_one_when_history_repeats_exactly():
    pts = [(d, 10.0) for d in _days(date(2026, 1, 1), date(2026, 3, 31))]
    daily = daily_quantities(_usage({("lookup", "production"): pts}))
    acc = invoice_backtest(daily, ["2026-01", "2026-02", "2026-03"], CARD, "acme", cut_days=(7, 14))
    assert [(a.cut_day, a.periods, a.mape, a.coverage) for a in acc] == [(7, 3, 0.0, 1.0), (14, 3, 0.0, 1.0)]


def test_residual_band_is_the_empirical_10_90_quantile_of_actual_over_forecast():
    bt = pl.DataFrame({
        "cut_day": [7, 7, 8, 6, 9, 30], "forecast": [100.0] * 6, "actual": [80.0, 90, 100, 110, 120, 500],
    })
    # the cut-30 row is not near day 7; ratios 0.8..1.2: linear quantiles 0.84 and 1.16
    lo, hi = residual_band(bt, 7)
    assert lo == pytest.approx(0.84) and hi == pytest.approx(1.16)
    assert residual_band(bt.head(2), 7) is None  # fewer than 3 residuals


def test_choose_methods_offers_a_method_only_if_it_beats_run_rate():
    bt = pl.DataFrame({
        "meter": ["lookup"] * 3 + ["report_job"] * 3, "environment": ["production"] * 6,
        "period": ["2026-01"] * 6, "cut_day": [7] * 6,
        "method": [RUN_RATE, WEEKDAY_SEASONAL, HOLT] * 2,
        "mtd": [10.0] * 6, "forecast": [50.0, 45.0, 60.0, 50.0, 50.0, 70.0], "actual": [40.0] * 6,
    })
    assert choose_methods(bt) == {("lookup", "production"): WEEKDAY_SEASONAL,
                                  ("report_job", "production"): RUN_RATE}  # a tie is not a win


# --- the priced projection -----------------------------------------------------------------


def test_short_history_falls_back_to_run_rate_with_wide_band_and_says_so():
    pts = [(d, 100.0) for d in _days(date(2026, 3, 1), date(2026, 3, 10))]
    p = project_invoice(_usage({("lookup", "production"): pts}), CARD, "acme", "2026-03", date(2026, 3, 10))
    (s,) = p.series
    assert s.method == RUN_RATE
    assert (s.mtd_quantity, s.remaining_quantity) == (Decimal(1000), Decimal(2100))
    assert (s.period_quantity_low, s.period_quantity, s.period_quantity_high) == (
        Decimal(2050), Decimal(3100), Decimal(4150))
    assert any("Short history" in n and "run-rate" in n for n in p.notes)
    assert p.backtest == ()
    # priced through the tiers (independent oracle): not proportional to the quantity
    assert p.mtd_cents == int(_oracle(Decimal(1000), LOOKUP_TIERS) * 100) == 100000
    assert p.total_cents == int(_oracle(Decimal(3100), LOOKUP_TIERS) * 100) == 255000
    assert p.low_cents == int(_oracle(Decimal(2050), LOOKUP_TIERS) * 100) == 202500
    assert p.high_cents == int(_oracle(Decimal(4150), LOOKUP_TIERS) * 100) == 307500
    assert p.total_cents != p.mtd_cents * 31 // 10  # linear extrapolation of spend would say $3,100


def test_projection_applies_discount_and_minimum_commit():
    pts = [(d, 100.0) for d in _days(date(2026, 3, 1), date(2026, 3, 10))]
    disc = project_invoice(_usage({("lookup", "production"): pts}, "disc"), CARD, "disc", "2026-03",
                           date(2026, 3, 10))
    assert disc.total_cents == 229500  # $2,550 less 10%
    commit = project_invoice(_usage({("lookup", "production"): pts}, "commit"), CARD, "commit", "2026-03",
                             date(2026, 3, 10))
    assert (commit.mtd_cents, commit.low_cents, commit.total_cents, commit.high_cents) == (
        500000, 500000, 500000, 500000)
    # the chart shows usage spend (no true-up): day 10 actual $1,000, period end point $2,550
    last = commit.daily.row(-1, named=True)
    assert commit.daily.filter(pl.col("day") == date(2026, 3, 10))["actual_cents"].item() == 100000
    assert last["projected_cents"] == 255000 and last["actual_cents"] is None


def test_projection_daily_chart_rows_and_band():
    pts = [(d, 100.0) for d in _days(date(2026, 2, 1), date(2026, 2, 10))]
    p = project_invoice(_usage({("lookup", "production"): pts}), CARD, "acme", "2026-02", date(2026, 2, 10))
    d = p.daily
    assert d.height == 28 and d["day"].is_sorted()
    assert d.filter(pl.col("actual_cents").is_not_null()).height == 10
    day11 = d.row(10, named=True)  # MTD 1000 + 100 point, 50 low, 150 high
    assert (day11["low_cents"], day11["projected_cents"], day11["high_cents"]) == (105000, 110000, 115000)
    assert (d["low_cents"] <= d["projected_cents"]).all() and (d["projected_cents"] <= d["high_cents"]).all()


def test_seasonal_series_wins_its_backtest_and_is_used():
    pattern = {0: 300.0, 1: 300.0, 2: 300.0, 3: 300.0, 4: 300.0, 5: 20.0, 6: 20.0}
    pts = [(d, pattern[d.weekday()]) for d in _days(date(2025, 12, 1), date(2026, 3, 12))]
    reports = [(d, 2.0) for d in _days(date(2025, 12, 1), date(2026, 3, 12))]
    u = _usage({("lookup", "production"): pts, ("report_job", "production"): reports})
    p = project_invoice(u, CARD, "acme", "2026-03", date(2026, 3, 12))
    by = {s.meter: s for s in p.series}
    assert by["lookup"].method == WEEKDAY_SEASONAL
    assert by["lookup"].backtest_wape[WEEKDAY_SEASONAL] == pytest.approx(0.0, abs=1e-12)
    assert by["lookup"].backtest_wape[RUN_RATE] > 0.01
    assert by["report_job"].method == RUN_RATE  # constant: nothing beats run-rate
    expected_rest = sum(pattern[d.weekday()] for d in _days(date(2026, 3, 13), date(2026, 3, 31)))
    mtd = sum(pattern[d.weekday()] for d in _days(date(2026, 3, 1), date(2026, 3, 12)))
    assert by["lookup"].period_quantity == Decimal(int(mtd + expected_rest))
    lk = by["lookup"]
    assert lk.period_quantity_low == lk.period_quantity_high == lk.period_quantity
    lookup = _oracle(Decimal(int(mtd + expected_rest)), LOOKUP_TIERS)
    assert p.total_cents == int((lookup + 62 * Decimal(3)) * 100)
    assert [a.cut_day for a in p.backtest] == [7, 14, 21]
    assert all(a.mape == 0.0 and a.coverage == 1.0 and a.periods == 3 for a in p.backtest)
    assert any("lookup/production: weekday-seasonal" in n for n in p.notes)


def test_projection_json_is_exact():
    pts = [(d, 100.0) for d in _days(date(2026, 3, 1), date(2026, 3, 10))]
    p = project_invoice(_usage({("lookup", "production"): pts}), CARD, "acme", "2026-03", date(2026, 3, 10))
    doc = projection_json(p)
    assert doc["projected_total_usd"] == Decimal("2550.00")
    assert doc["series"][0]["forecast_quantity_high"] == Decimal(4150)
    assert len(doc["daily"]) == 31
    text = dumps(doc)
    assert '"projected_total_usd": 2550.00' in text and '"projected_low_usd": 2025.00' in text


def test_as_of_outside_period_is_rejected():
    with pytest.raises(ValueError, match="not inside period 2026-03"):
        project_invoice(_usage({}), CARD, "acme", "2026-03", date(2026, 4, 1))


def test_price_quantities_is_the_seam():
    """Sanity of the oracle against the production pricer at the tier boundary."""
    for q in (Decimal(1999), Decimal(2000), Decimal("2000.5"), Decimal(5000)):
        inv = price_quantities({("lookup", "production"): q}, CARD, "acme")
        assert inv.total_cents == int((_oracle(q, LOOKUP_TIERS) * 100).to_integral_value())


def test_projection_reads_only_its_own_history_window():
    """Rows before history_start(period) (here: wild values a year earlier) change nothing, so every
    caller gets the same projection whatever longer history it passes."""
    from metering.forecast import history_start

    assert history_start("2026-03") == date(2025, 8, 1)
    recent = [(d, 100.0 + (d.toordinal() % 7) * 10) for d in _days(date(2025, 8, 1), date(2026, 3, 12))]
    older = [(d, 5000.0 * (d.day % 3)) for d in _days(date(2025, 1, 1), date(2025, 7, 31))]
    cut = date(2026, 3, 12)
    trimmed = project_invoice(_usage({("lookup", "production"): recent}), CARD, "acme", "2026-03", cut)
    longer = project_invoice(_usage({("lookup", "production"): older + recent}), CARD, "acme", "2026-03", cut)
    assert longer.total_cents == trimmed.total_cents
    assert longer.series == trimmed.series and longer.backtest == trimmed.backtest
