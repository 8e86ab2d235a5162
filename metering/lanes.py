"""Period-over-period lanes: current vs previous spend per part of a dimension, and why it moved.

A *lane* is one value of a dimension (a project, a key, a workload...). Inputs are spend frames
(already priced/allocated): the dimension column, ``amount_cents`` (Int64) and, for the volume
vs rate decomposition, ``quantity_micros`` (Int64, billable quantity); an optional ``meter``
column makes the decomposition per (lane, meter), so a shift of mix between meters is volume,
not rate. This module also cuts a usage frame into full-period and like-for-like windows.

All money is integer cents; the decomposition uses exact integer arithmetic. ``spend_by`` and
``lanes_for_period`` are thin conveniences over the invoice and allocation code
(``build_invoice`` + ``allocate_invoice``) for callers holding a usage frame and a rate card.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from metering.domain import AMOUNT_CENTS, DAY, DIMENSIONS, METER, QUANTITY_MICROS
from metering.periods import days_in_period, period_bounds, period_of, shift_period

NEW = "new"
ENDED = "ended"
CONTINUING = "continuing"

LANE_SCHEMA = {
    "current_cents": pl.Int64,
    "previous_cents": pl.Int64,
    "delta_cents": pl.Int64,
    "delta_pct": pl.Float64,
    "status": pl.String,
    "contribution_cents": pl.Int64,
    "contribution_share": pl.Float64,
    "contribution_pp": pl.Float64,
    "current_quantity_micros": pl.Int64,
    "previous_quantity_micros": pl.Int64,
    "volume_effect_cents": pl.Int64,
    "rate_effect_cents": pl.Int64,
}


@dataclass(frozen=True)
class LaneComparison:
    """Current vs previous spend per lane.

    ``lanes``: pl.DataFrame[<dimension>, current_cents, previous_cents, delta_cents (current -
    previous), delta_pct (Float64 percent of previous; null for new lanes), status (new | ended |
    continuing), contribution_cents (= delta_cents; they sum exactly to ``total_delta_cents``),
    contribution_share (Float64 fraction of the total change; null when it is 0), contribution_pp
    (Float64 percentage points of the previous total; sums to ``total_delta_pct``),
    current_quantity_micros, previous_quantity_micros, volume_effect_cents, rate_effect_cents
    (volume + rate = delta exactly)], sorted by |delta| descending, then lane.

    Volume effect of a (lane, meter) cell = (q1 - q0) * r0 with r0 = a0 / q0 the previous effective
    unit rate, rounded half up to a cent; rate effect = delta - volume effect, so the rate
    effect holds the rounding residue (it equals (r1 - r0) * q1 up to that residue). A cell new this
    period (q0 = 0) or ended (q1 = 0) is all volume; a cell with no quantity in either period (e.g. a
    minimum-commitment true-up) is all rate. Without quantities every change is reported as volume.
    """

    dimension: str
    lanes: pl.DataFrame
    current_total_cents: int
    previous_total_cents: int
    total_delta_cents: int
    total_delta_pct: float | None
    new: tuple[str, ...]
    ended: tuple[str, ...]


@dataclass(frozen=True)
class Windows:
    """Two inclusive day windows to compare: ``current`` and ``previous`` as (first, last) dates."""

    current_period: str
    previous_period: str
    current: tuple[date, date]
    previous: tuple[date, date]
    like_for_like: bool

    @property
    def elapsed_days(self) -> int:
        return (self.current[1] - self.current[0]).days + 1


def lanes_period_over_period(
    current: pl.DataFrame, previous: pl.DataFrame, dimension: str
) -> LaneComparison:
    """Compare two spend frames lane by lane (see LaneComparison for the output schema)."""
    for name, frame in (("current", current), ("previous", previous)):
        _check(frame, dimension, name)
    with_q = QUANTITY_MICROS in current.columns and QUANTITY_MICROS in previous.columns
    by_meter = with_q and METER in current.columns and METER in previous.columns and dimension != METER
    keys = [dimension, METER] if by_meter else [dimension]
    cells = _cells(current, keys, with_q).join(
        _cells(previous, keys, with_q), on=keys, how="full", coalesce=True, suffix="_prev"
    )
    cells = cells.fill_null(0)
    volume = []
    for a1, a0, q1, q0 in cells.select(AMOUNT_CENTS, AMOUNT_CENTS + "_prev", "q", "q_prev").iter_rows():
        volume.append(volume_effect(a0, a1, q0, q1) if with_q else a1 - a0)
    cells = cells.with_columns(pl.Series("volume_effect_cents", volume, dtype=pl.Int64))
    lanes = (
        cells.group_by(dimension)
        .agg(
            pl.col(AMOUNT_CENTS).sum().alias("current_cents"),
            pl.col(AMOUNT_CENTS + "_prev").sum().alias("previous_cents"),
            pl.col("q").sum().alias("current_quantity_micros"),
            pl.col("q_prev").sum().alias("previous_quantity_micros"),
            pl.col("volume_effect_cents").sum(),
            pl.col("present").max().alias("in_current"),
            pl.col("present_prev").max().alias("in_previous"),
        )
        .with_columns((pl.col("current_cents") - pl.col("previous_cents")).alias("delta_cents"))
    )
    cur_total = int(lanes["current_cents"].sum())
    prev_total = int(lanes["previous_cents"].sum())
    total_delta = cur_total - prev_total
    status = (
        pl.when(pl.col("in_previous") == 0).then(pl.lit(NEW))
        .when(pl.col("in_current") == 0).then(pl.lit(ENDED))
        .otherwise(pl.lit(CONTINUING))
    )
    lanes = lanes.with_columns(
        pl.when(pl.col("previous_cents") != 0)
        .then(pl.col("delta_cents") * 100.0 / pl.col("previous_cents"))
        .otherwise(None)
        .alias("delta_pct"),
        status.alias("status"),
        pl.col("delta_cents").alias("contribution_cents"),
        (pl.col("delta_cents") / total_delta if total_delta else pl.lit(None, pl.Float64))
        .alias("contribution_share"),
        (pl.col("delta_cents") * 100.0 / prev_total if prev_total else pl.lit(None, pl.Float64))
        .alias("contribution_pp"),
        (pl.col("delta_cents") - pl.col("volume_effect_cents")).alias("rate_effect_cents"),
    )
    lanes = (
        lanes.with_columns(pl.col("delta_cents").abs().alias("_abs"))
        .sort(["_abs", dimension], descending=[True, False])
        .select(dimension, *[pl.col(c).cast(t) for c, t in LANE_SCHEMA.items()])
    )
    new = tuple(str(v) for v in lanes.filter(pl.col("status") == NEW)[dimension].sort().to_list())
    ended = tuple(str(v) for v in lanes.filter(pl.col("status") == ENDED)[dimension].sort().to_list())
    return LaneComparison(
        dimension=dimension,
        lanes=lanes,
        current_total_cents=cur_total,
        previous_total_cents=prev_total,
        total_delta_cents=total_delta,
        total_delta_pct=(total_delta * 100.0 / prev_total) if prev_total else None,
        new=new,
        ended=ended,
    )


def spend_by(usage: pl.DataFrame, card, org: str, period: str, dimensions,
             as_of: datetime | None = None) -> pl.DataFrame:
    """The org's invoice for the period (month to date with ``as_of``) allocated over ``dimensions``:
    pl.DataFrame[*dimensions, meter, environment, quantity_micros, amount_cents] (see
    metering.allocate.allocate_invoice), summing exactly to the invoice total."""
    from metering.allocate import allocate_invoice
    from metering.invoice import build_invoice

    invoice = build_invoice(usage, card, org, period, as_of)
    return allocate_invoice(usage, invoice, card, dimensions)


def lanes_for_period(
    usage: pl.DataFrame, card, org: str, period: str, dimension: str, *,
    as_of: datetime | None = None, previous_card=None,
) -> tuple[LaneComparison, Windows]:
    """Price and compare ``period`` with the month before for one org.

    Full period without ``as_of``; with it, like-for-like: month-to-date through as_of's UTC
    date vs the same elapsed days of the previous month, each window priced as its own
    (partial) invoice through the tiers. ``previous_card`` defaults to ``card``.
    """
    if as_of is None:
        windows = period_windows(period)
    else:
        windows = like_for_like_windows(as_of, period)
    cur_usage, prev_usage = cut_windows(usage, windows)
    prev_card = card if previous_card is None else previous_card
    current = spend_by(cur_usage, card, org, windows.current_period, [dimension])
    previous = spend_by(prev_usage, prev_card, org, windows.previous_period, [dimension])
    return lanes_period_over_period(current, previous, dimension), windows


def volume_effect(a0: int, a1: int, q0: int, q1: int) -> int:
    """Volume effect in cents of one cell: (q1 - q0) * a0 / q0 rounded half up (see LaneComparison)."""
    if q0 == 0:
        return 0 if q1 == 0 else a1 - a0
    if q1 == 0:
        return a1 - a0
    num, den = (q1 - q0) * a0, q0
    return _round_half_up(num, den)


def period_windows(period: str, previous: str | None = None) -> Windows:
    """Full-period windows: the whole of ``period`` vs the whole of ``previous`` (default: month before)."""
    previous = previous or shift_period(period, -1)
    return Windows(period, previous, period_bounds(period), period_bounds(previous), False)


def like_for_like_windows(as_of: date | datetime, period: str | None = None,
                          previous: str | None = None) -> Windows:
    """Month-to-date through ``as_of`` vs the same number of elapsed days of the previous period.

    ``as_of`` is inclusive (a datetime is taken as its UTC date). The previous window is days
    1..n of ``previous`` with n = the elapsed days, capped at that period's length: as of
    31 March the comparison is 1-31 March vs 1-28 February (the whole of February).
    Raises ValueError if ``as_of`` is not inside ``period``.
    """
    day = _as_date(as_of)
    period = period or period_of(day)
    previous = previous or shift_period(period, -1)
    first, last = period_bounds(period)
    if not first <= day <= last:
        raise ValueError(f"as_of {day.isoformat()} is not inside period {period}")
    elapsed = (day - first).days + 1
    prev_first, _ = period_bounds(previous)
    prev_days = min(elapsed, days_in_period(previous))
    prev_last = prev_first + timedelta(days=prev_days - 1)
    return Windows(period, previous, (first, day), (prev_first, prev_last), True)


def cut_windows(usage: pl.DataFrame, windows: Windows) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows of a frame with a ``day`` column inside each window: (current, previous)."""
    if DAY not in usage.columns:
        raise ValueError(f"frame has no column {DAY!r}")
    return (
        usage.filter(pl.col(DAY).is_between(*windows.current, closed="both")),
        usage.filter(pl.col(DAY).is_between(*windows.previous, closed="both")),
    )


def cut_like_for_like(usage: pl.DataFrame, as_of: date | datetime, period: str | None = None,
                      previous: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, Windows]:
    """Cut a usage (or daily spend) frame into month-to-date and the same elapsed days before."""
    windows = like_for_like_windows(as_of, period, previous)
    cur, prev = cut_windows(usage, windows)
    return cur, prev, windows


def _check(frame: pl.DataFrame, dimension: str, name: str) -> None:
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; expected one of {', '.join(DIMENSIONS)}")
    for col in (dimension, AMOUNT_CENTS):
        if col not in frame.columns:
            raise ValueError(f"{name} spend frame has no column {col!r}")
    for col in (AMOUNT_CENTS, QUANTITY_MICROS):
        if col in frame.columns and not frame.schema[col].is_integer():
            raise ValueError(f"{name} spend frame column {col!r} must be an integer, got {frame.schema[col]}")


def _cells(frame: pl.DataFrame, keys: list[str], with_q: bool) -> pl.DataFrame:
    q = pl.col(QUANTITY_MICROS).cast(pl.Int64).sum() if with_q else pl.lit(0, pl.Int64)
    return frame.group_by(keys).agg(
        pl.col(AMOUNT_CENTS).cast(pl.Int64).sum(), q.alias("q"), pl.lit(1, pl.Int8).alias("present")
    )


def _round_half_up(num: int, den: int) -> int:
    """num / den rounded half up (away from zero at .5, like money.to_cents), exact; den > 0."""
    units = (2 * abs(num) + den) // (2 * den)
    return units if num >= 0 else -units


def _as_date(value: date | datetime) -> date:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"as_of {value.isoformat()} has no UTC offset")
        return value.astimezone(UTC).date()
    return value
