"""Period-over-period lanes: deltas, new/ended lanes, exact contributions, volume vs rate split,
and like-for-like windows at month edges. Every expected number is worked out in the comments."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import polars as pl
import pytest

from metering.lanes import (
    CONTINUING,
    ENDED,
    NEW,
    cut_like_for_like,
    lanes_period_over_period,
    like_for_like_windows,
    period_windows,
    volume_effect,
)

M = 1_000_000  # micro-units per unit


def _spend(rows, dim="project"):
    return pl.DataFrame(rows, schema=[dim, "meter", "amount_cents", "quantity_micros"], orient="row")


def _lane(result, name):
    rows = result.lanes.filter(pl.col(result.dimension) == name).to_dicts()
    assert len(rows) == 1
    return rows[0]


PREVIOUS = _spend([
    ("underwriting", "lookup", 2000, 100 * M),   # 100 lookups at 20c
    ("workforce", "lookup", 600, 10 * M),        # 10 lookups at 60c
    ("legacy", "lookup", 900, 9 * M),            # ends this period
])
CURRENT = _spend([
    ("underwriting", "lookup", 2700, 150 * M),   # 150 lookups at 18c (a cheaper tier kicked in)
    ("workforce", "lookup", 500, 10 * M),        # same volume at 50c (a discount)
    ("pilot", "lookup", 700, 7 * M),             # new this period
])


def test_deltas_status_and_contributions_sum_exactly():
    r = lanes_period_over_period(CURRENT, PREVIOUS, "project")
    # totals: current 2700 + 500 + 700 = 3900; previous 2000 + 600 + 900 = 3500; change +400
    assert (r.current_total_cents, r.previous_total_cents, r.total_delta_cents) == (3900, 3500, 400)
    assert r.total_delta_pct == pytest.approx(400 / 3500 * 100)
    assert r.new == ("pilot",) and r.ended == ("legacy",)
    # sorted by |delta|: legacy -900, underwriting +700, pilot +700 (tie: name order), workforce -100
    assert r.lanes["project"].to_list() == ["legacy", "pilot", "underwriting", "workforce"]
    assert r.lanes["delta_cents"].to_list() == [-900, 700, 700, -100]
    assert r.lanes["status"].to_list() == [ENDED, NEW, CONTINUING, CONTINUING]
    assert sum(r.lanes["contribution_cents"].to_list()) == r.total_delta_cents
    uw = _lane(r, "underwriting")
    assert uw["delta_pct"] == pytest.approx(35.0)  # 700 / 2000
    assert uw["contribution_share"] == pytest.approx(700 / 400)
    assert uw["contribution_pp"] == pytest.approx(700 / 3500 * 100)
    assert _lane(r, "pilot")["delta_pct"] is None  # no previous spend
    assert sum(r.lanes["contribution_pp"].to_list()) == pytest.approx(r.total_delta_pct)


def test_volume_and_rate_effects():
    r = lanes_period_over_period(CURRENT, PREVIOUS, "project")
    uw = _lane(r, "underwriting")
    # volume = (150 - 100) * 20c = 1000; rate = (18c - 20c) * 150 = -300; 1000 - 300 = 700
    assert (uw["volume_effect_cents"], uw["rate_effect_cents"]) == (1000, -300)
    wf = _lane(r, "workforce")
    # same 10 lookups: volume 0; rate (50c - 60c) * 10 = -100
    assert (wf["volume_effect_cents"], wf["rate_effect_cents"]) == (0, -100)
    # new and ended lanes are all volume
    assert (_lane(r, "pilot")["volume_effect_cents"], _lane(r, "pilot")["rate_effect_cents"]) == (700, 0)
    assert (_lane(r, "legacy")["volume_effect_cents"], _lane(r, "legacy")["rate_effect_cents"]) == (-900, 0)
    lanes = r.lanes
    assert (lanes["volume_effect_cents"] + lanes["rate_effect_cents"] == lanes["delta_cents"]).all()


def test_rounding_residue_goes_to_rate_effect():
    # r0 = 100c / 3 = 33.33c; volume = (4 - 3) * 33.33 = 33.33 -> 33; delta = 40; rate = 7
    # (the exact rate effect (35 - 33.33) * 4 = 6.67; its residue 0.33 is in the rate effect)
    assert volume_effect(a0=100, a1=140, q0=3 * M, q1=4 * M) == 33
    # half cents round away from zero like money.to_cents: (1 - 2) * 5 / 2 = -2.5 -> -3
    assert volume_effect(a0=5, a1=3, q0=2 * M, q1=1 * M) == -3
    assert volume_effect(a0=5, a1=8, q0=2 * M, q1=3 * M) == 3  # (3 - 2) * 5 / 2 = 2.5 -> 3
    cur = _spend([("a", "lookup", 140, 4 * M)])
    prev = _spend([("a", "lookup", 100, 3 * M)])
    lane = lanes_period_over_period(cur, prev, "project").lanes.row(0, named=True)
    assert (lane["delta_cents"], lane["volume_effect_cents"], lane["rate_effect_cents"]) == (40, 33, 7)


def test_mix_shift_between_meters_is_volume_not_rate():
    # previous: 100 lookups at 10c = 1000, 1 report job at 500 = 500; current: 50 lookups = 500,
    # 2 report jobs = 1000. Same unit rates, same total: per (lane, meter) volume -500 + 500 = 0.
    prev = _spend([("a", "lookup", 1000, 100 * M), ("a", "report_job", 500, 1 * M)])
    cur = _spend([("a", "lookup", 500, 50 * M), ("a", "report_job", 1000, 2 * M)])
    lane = lanes_period_over_period(cur, prev, "project").lanes.row(0, named=True)
    assert (lane["delta_cents"], lane["volume_effect_cents"], lane["rate_effect_cents"]) == (0, 0, 0)
    # without the meter column the blended rate 1500/101 units moves: volume = (52 - 101) * 1500 / 101
    # = -727.72 -> -728, rate = 0 - (-728) = +728
    lane = lanes_period_over_period(cur.drop("meter"), prev.drop("meter"), "project").lanes.row(0, named=True)
    assert (lane["volume_effect_cents"], lane["rate_effect_cents"]) == (-728, 728)


def test_lane_without_quantity_is_all_rate_and_without_quantities_all_volume():
    # a minimum-commitment true-up has no quantity in either period: its change is pricing, not volume
    prev = _spend([("(minimum commitment)", None, 300, 0)])
    cur = _spend([("(minimum commitment)", None, 100, 0)])
    lane = lanes_period_over_period(cur, prev, "project").lanes.row(0, named=True)
    assert (lane["delta_cents"], lane["volume_effect_cents"], lane["rate_effect_cents"]) == (-200, 0, -200)
    lane = lanes_period_over_period(
        cur.drop("quantity_micros"), prev.drop("quantity_micros"), "project"
    ).lanes.row(0, named=True)
    assert (lane["volume_effect_cents"], lane["rate_effect_cents"]) == (-200, 0)


def test_no_change_and_empty_previous():
    r = lanes_period_over_period(CURRENT, CURRENT, "project")
    assert r.total_delta_cents == 0 and r.lanes["contribution_share"].null_count() == 3
    empty = CURRENT.clear()
    r = lanes_period_over_period(CURRENT, empty, "project")
    assert r.total_delta_pct is None and set(r.new) == {"underwriting", "workforce", "pilot"}
    assert r.lanes["contribution_pp"].null_count() == 3


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="previous spend frame has no column 'amount_cents'"):
        lanes_period_over_period(CURRENT, PREVIOUS.drop("amount_cents"), "project")
    with pytest.raises(ValueError, match="unknown dimension"):
        lanes_period_over_period(CURRENT, PREVIOUS, "colour")
    with pytest.raises(ValueError, match="'quantity_micros' must be an integer"):
        lanes_period_over_period(CURRENT.with_columns(pl.col("quantity_micros") / 1), PREVIOUS, "project")


@pytest.mark.parametrize(
    ("as_of", "current", "previous"),
    [
        # 31-day March after 28-day February: elapsed days capped at February's 28
        (date(2026, 3, 31), ("2026-03-01", "2026-03-31"), ("2026-02-01", "2026-02-28")),
        (date(2026, 3, 29), ("2026-03-01", "2026-03-29"), ("2026-02-01", "2026-02-28")),
        (date(2026, 3, 28), ("2026-03-01", "2026-03-28"), ("2026-02-01", "2026-02-28")),
        (date(2026, 3, 27), ("2026-03-01", "2026-03-27"), ("2026-02-01", "2026-02-27")),
        # leap year: February has 29 days
        (date(2028, 3, 31), ("2028-03-01", "2028-03-31"), ("2028-02-01", "2028-02-29")),
        # 28-day February after 31-day January: 28 days each
        (date(2026, 2, 28), ("2026-02-01", "2026-02-28"), ("2026-01-01", "2026-01-28")),
        # 31-day May after 30-day April; 30-day April after 31-day March
        (date(2026, 5, 31), ("2026-05-01", "2026-05-31"), ("2026-04-01", "2026-04-30")),
        (date(2026, 4, 30), ("2026-04-01", "2026-04-30"), ("2026-03-01", "2026-03-30")),
        # first day of the period; year boundary
        (date(2026, 1, 1), ("2026-01-01", "2026-01-01"), ("2025-12-01", "2025-12-01")),
    ],
)
def test_like_for_like_windows(as_of, current, previous):
    w = like_for_like_windows(as_of)
    assert tuple(d.isoformat() for d in w.current) == current
    assert tuple(d.isoformat() for d in w.previous) == previous
    assert w.like_for_like and w.current_period == current[0][:7] and w.previous_period == previous[0][:7]


def test_like_for_like_takes_as_of_in_utc_and_checks_the_period():
    # 01:00 on 1 April at +02:00 is 23:00 on 31 March UTC
    w = like_for_like_windows(datetime(2026, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    assert w.current == (date(2026, 3, 1), date(2026, 3, 31)) and w.elapsed_days == 31
    with pytest.raises(ValueError, match="as_of 2026-04-02 is not inside period 2026-03"):
        like_for_like_windows(date(2026, 4, 2), period="2026-03")
    with pytest.raises(ValueError, match="no UTC offset"):
        like_for_like_windows(datetime(2026, 4, 1))  # noqa: DTZ001
    # an explicit previous period (e.g. same month last year)
    w = like_for_like_windows(date(2026, 3, 10), previous="2025-03")
    assert w.previous == (date(2025, 3, 1), date(2025, 3, 10))


def test_cut_like_for_like_and_full_period_windows():
    days = [date(2026, 2, 1) + timedelta(days=i) for i in range(59)]  # 1 Feb .. 31 Mar
    usage = pl.DataFrame({"day": days, "amount_cents": list(range(59))})
    cur, prev, w = cut_like_for_like(usage, date(2026, 3, 10))
    assert (cur["day"].min(), cur["day"].max(), cur.height) == (date(2026, 3, 1), date(2026, 3, 10), 10)
    assert (prev["day"].min(), prev["day"].max(), prev.height) == (date(2026, 2, 1), date(2026, 2, 10), 10)
    full = period_windows("2026-03")
    assert full.current == (date(2026, 3, 1), date(2026, 3, 31))
    assert full.previous == (date(2026, 2, 1), date(2026, 2, 28)) and not full.like_for_like


CARD = """
currency = "USD"
effective_from = "2026-01"
[meters.lookup.production]
tiers = [{ up_to = 100, unit_price = "0.30" }, { unit_price = "0.20" }]
"""


def _usage(rows):
    """rows: (day, project, lookups) of successful production lookups for org acme."""
    from metering.domain import USAGE_SCHEMA

    out = [(date.fromisoformat(d), "acme", p, "production", "k1", "lookup", "underwriting", "api", "success",
            False, True, n * M, n) for d, p, n in rows]
    return pl.DataFrame(out, schema=USAGE_SCHEMA, orient="row")


def test_lanes_priced_through_tiers_full_period_and_like_for_like():
    from metering.pricing import parse_rate_card

    card = parse_rate_card(CARD)
    usage = _usage([
        ("2026-02-05", "a", 40), ("2026-02-20", "a", 40), ("2026-02-05", "b", 20),
        ("2026-03-05", "a", 100), ("2026-03-20", "a", 50), ("2026-03-05", "b", 20),
    ])
    from metering.lanes import lanes_for_period

    r, w = lanes_for_period(usage, card, "acme", "2026-03", "project")
    assert not w.like_for_like
    # Feb: 100 lookups x 0.30 = 3000c -> a 80/100 = 2400, b 600
    # Mar: 170 lookups = 100 x 0.30 + 70 x 0.20 = 4400c -> a 4400 x 150/170 = 3882.35, b 517.65:
    #      floors 3882 + 517 = 4399, the cent goes to the larger remainder (b) -> a 3882, b 518
    assert (r.previous_total_cents, r.current_total_cents, r.total_delta_cents) == (3000, 4400, 1400)
    a, b = _lane(r, "a"), _lane(r, "b")
    money = ("previous_cents", "current_cents")
    assert [a[c] for c in money] + [b[c] for c in money] == [2400, 3882, 600, 518]
    # a: r0 = 2400 / 80 = 30c; volume (150 - 80) x 30 = 2100; rate 1482 - 2100 = -618 (the cheaper tier)
    assert (a["delta_cents"], a["volume_effect_cents"], a["rate_effect_cents"]) == (1482, 2100, -618)
    # b: same 20 lookups, cheaper blended rate: all rate
    assert (b["delta_cents"], b["volume_effect_cents"], b["rate_effect_cents"]) == (-82, 0, -82)

    r, w = lanes_for_period(usage, card, "acme", "2026-03", "project",
                            as_of=datetime(2026, 3, 10, 18, 0, tzinfo=UTC))
    assert w.like_for_like and w.previous == (date(2026, 2, 1), date(2026, 2, 10))
    # MTD 1-10 Mar: a 100 + b 20 = 120 lookups = 3000 + 20 x 20 = 3400c -> a 2833.33, b 566.67 -> 2833 / 567
    # 1-10 Feb: a 40 + b 20 = 60 lookups x 30 = 1800c -> a 1200, b 600
    a, b = _lane(r, "a"), _lane(r, "b")
    assert [a[c] for c in money] + [b[c] for c in money] == [1200, 2833, 600, 567]
    # a: volume (100 - 40) x 30 = 1800, rate 1633 - 1800 = -167; b: rate -33
    effects = ("volume_effect_cents", "rate_effect_cents")
    assert [a[c] for c in effects] + [b[c] for c in effects] == [1800, -167, 0, -33]
