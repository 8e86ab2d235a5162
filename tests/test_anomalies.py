"""Daily spend anomalies: a constructed spike is found with its dollar impact; flat, zero and
short series raise nothing. Medians and MADs are worked out by hand in the comments."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from metering.anomalies import lane_anomalies, spend_anomalies

D0 = date(2026, 3, 1)


def _daily(series: dict[str, list[int]], dim="api_key", meter="lookup", start=D0):
    rows = [
        (start + timedelta(days=i), lane, meter, cents)
        for lane, values in series.items()
        for i, cents in enumerate(values)
        if cents is not None
    ]
    return pl.DataFrame(rows, schema=["day", dim, "meter", "amount_cents"], orient="row")


def test_constructed_spike_with_baseline_mad_score_and_impact():
    daily = _daily({"k1": [100, 120, 90, 110, 100, 95, 105, 400, 100]})
    out = spend_anomalies(daily, "api_key", window=7, min_history=5, floor_cents=1)
    assert out.height == 1
    hit = out.row(0, named=True)
    # day 8 (2026-03-08): history days 1-7 sorted 90 95 100 100 105 110 120 -> median 100;
    # |x - 100| = 0 20 10 10 0 5 5, sorted 0 0 5 5 10 10 20 -> MAD 5;
    # scale = max(1.4826 * 5, 5% of 100, 1) = 7.413
    assert hit["day"] == date(2026, 3, 8) and hit["lane"] == "k1" and hit["dimension"] == "api_key"
    assert (hit["amount_cents"], hit["baseline_cents"], hit["impact_cents"]) == (400, 100, 300)
    assert hit["mad_cents"] == 5.0
    assert hit["score"] == pytest.approx(300 / 7.413)
    assert hit["history_days"] == 7
    assert (hit["top_meter"], hit["top_meter_cents"]) == ("HRS lookups", 400)


def test_no_alert_on_flat_zero_series_or_flat_series_at_its_median():
    daily = _daily({"zero": [0] * 40, "flat": [2500] * 40})
    assert spend_anomalies(daily, "api_key", window=14, min_history=7).height == 0


def test_flat_series_with_mad_zero_alerts_only_above_the_floor():
    # flat at 10000c: MAD = 0, so scale = max(0, 5% of 10000 = 500, 100) = 500
    # +50c -> score 0.1 (no alert); +9000c -> score 18 (alert, impact 9000)
    daily = _daily({"k": [10000] * 20 + [10050] + [10000] * 5 + [19000]})
    out = spend_anomalies(daily, "api_key", window=14, min_history=7)
    assert out.select("day", "baseline_cents", "impact_cents", "score").rows() == [
        (D0 + timedelta(days=26), 10000, 9000, 18.0)
    ]


def test_minimum_history_and_lane_start():
    # the lane starts on day 11 (days before are not history); spike on its 5th day: only 4 days of
    # history < min_history 7 -> nothing. The same spike after 10 days of history is found.
    early = _daily({"k": [None] * 10 + [100, 100, 100, 100, 5000]})
    assert spend_anomalies(early, "api_key", window=14, min_history=7).height == 0
    later = _daily({"k": [None] * 10 + [100] * 10 + [5000]})
    out = spend_anomalies(later, "api_key", window=14, min_history=7)
    assert out.select("day", "history_days", "impact_cents").rows() == [(D0 + timedelta(days=20), 10, 4900)]
    # a new lane's first day is not a spike even when the frame starts earlier
    late_start = D0 + timedelta(days=29)
    newcomer = pl.concat([_daily({"old": [100] * 30}), _daily({"new": [9000]}, start=late_start)])
    assert spend_anomalies(newcomer, "api_key", window=14, min_history=7).height == 0


def test_missing_days_count_as_zero_once_the_lane_started():
    # rows only on every other day: 200, (0), 200, (0), ... -> 14-day history median (0 + 200) / 2 = 100,
    # MAD 100; day 21 = 2000: scale = max(148.26, 5, 100) = 148.26, impact 2000 - 100 = 1900
    values = [200 if i % 2 == 0 else None for i in range(20)] + [2000]
    out = spend_anomalies(_daily({"k": values}), "api_key", window=14, min_history=7)
    assert out.select("baseline_cents", "mad_cents", "impact_cents").rows() == [(100, 100.0, 1900)]


def test_half_cent_median_baseline_rounds_half_up():
    # window 2: history 100, 101 -> median 100.5 -> baseline 101 (half up); impact 1000 - 101 = 899
    out = spend_anomalies(_daily({"k": [100, 101, 1000]}), "api_key", window=2, min_history=2)
    assert out.select("baseline_cents", "impact_cents").rows() == [(101, 899)]


def test_report_heavy_spike_stands_out_across_lanes():
    days = 35
    rows = []
    for i in range(days):
        d = D0 + timedelta(days=i)
        # underwriting: steady lookups with noise 3000..3040c (a small bump to 3300c on day 30: no alert)
        uw = 3300 if i == 30 else 3000 + (i % 5) * 10
        rows.append((d, "k-uw", "underwriting", "production-uw", "lookup", uw))
        # finance package: a few report jobs a day (800..880c), then a month-end run of 40 jobs on day 33
        jobs = 4 + i % 2
        rows.append((d, "k-fin", "finance-package", "production-fin", "report_job", 200 * jobs))
        rows.append((d, "k-fin", "finance-package", "production-fin", "lookup", 50))
        if i == 33:
            rows.append((d, "k-fin", "finance-package", "production-fin", "report_job", 200 * 36))
        # sandbox: always zero
        rows.append((d, "k-sbx", "workforce-review", "sandbox-wf", "lookup", 0))
    daily = pl.DataFrame(rows, schema=["day", "api_key", "workload", "project", "meter", "amount_cents"],
                         orient="row")
    out = lane_anomalies(daily, window=28, min_history=14)
    # k-fin per day: even days 4 jobs = 800 + 50 = 850, odd days 5 jobs = 1000 + 50 = 1050.
    # Day 34 (i = 33, odd): 1000 + 7200 + 50 = 8250. History i = 5..32: 14 x 850, 14 x 1050 ->
    # median 950, MAD 100, scale max(148.26, 47.5, 100) = 148.26, score 7300 / 148.26 = 49.2.
    # Impact 8250 - 950 = 7300 on each of the three lanes carrying that work (key, workload, project).
    # Underwriting's bump: median 3020, MAD 10, scale max(14.8, 151, 100) = 151, score 280 / 151 < 4.
    # Same impact: ordered by dimension name, then lane.
    assert out.select("dimension", "lane").rows() == [
        ("api_key", "k-fin"), ("project", "production-fin"), ("workload", "finance-package")
    ]
    assert out["impact_cents"].to_list() == [7300, 7300, 7300]
    assert out["amount_cents"].to_list() == [8250, 8250, 8250]
    assert out["top_meter"].to_list() == ["Report jobs"] * 3
    assert out["top_meter_cents"].to_list() == [8200] * 3  # 1000 + 7200 report-job cents that day
    assert (out["day"] == D0 + timedelta(days=33)).all()


def test_bad_input_is_named():
    daily = _daily({"k": [1, 2, 3]})
    with pytest.raises(ValueError, match="no column 'workload'"):
        spend_anomalies(daily, "workload")
    with pytest.raises(ValueError, match="min_history must be between 1 and window"):
        spend_anomalies(daily, "api_key", window=7, min_history=8)
    with pytest.raises(ValueError, match="integer cents"):
        spend_anomalies(daily.with_columns(pl.col("amount_cents") * 1.0), "api_key")
    assert spend_anomalies(daily.clear(), "api_key").height == 0


def test_rolling_baseline_matches_a_plain_python_median_and_mad():
    import statistics

    import numpy as np

    from metering.anomalies import _rolling_baseline

    rng = np.random.default_rng(3)
    values = rng.integers(0, 1000, (5, 40)).astype(float)
    values[rng.random((5, 40)) < 0.15] = np.nan  # days before a lane starts
    median, mad, count = _rolling_baseline(values, 9)
    for lane in range(5):
        for day in range(40):
            hist = [v for v in values[lane, max(0, day - 9):day] if not np.isnan(v)]
            assert count[lane, day] == len(hist)
            if hist:
                med = statistics.median(hist)
                assert median[lane, day] == med
                assert mad[lane, day] == statistics.median([abs(v - med) for v in hist])
            else:
                assert np.isnan(median[lane, day]) and np.isnan(mad[lane, day])


def test_rows_without_a_day_are_left_out():
    # an allocation's minimum-commitment true-up row has a null day: not daily spend
    daily = _daily({"k1": [100, 120, 90, 110, 100, 95, 105, 400, 100]})
    true_up = pl.DataFrame(
        {"day": [None], "api_key": ["(minimum commitment)"], "meter": ["minimum_commit_true_up"],
         "amount_cents": [50_000]},
        schema=daily.schema,
    )
    out = spend_anomalies(pl.concat([daily, true_up]), "api_key", window=7, min_history=5, floor_cents=1)
    assert out.select("lane", "impact_cents").rows() == [("k1", 300)]
    assert spend_anomalies(true_up, "api_key").height == 0
