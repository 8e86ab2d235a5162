"""Daily spend anomalies per lane (api_key, workload, project) against a robust baseline.

Input is a *daily spend frame*: ``day`` (Date), the lane dimension column, ``amount_cents``
(Int64) and optionally ``meter`` (to name what drove a spike), e.g. the output of
``allocate_invoice(..., dimensions=[day, api_key, workload, project])``; rows without a day
(the minimum-commitment true-up) are left out.

Baseline for a lane on day t: the median of its daily spend over the previous ``window`` days
(t itself excluded), spread: the median absolute deviation (MAD) over the same days. Days with no
rows count as zero spend once the lane has started (its first row); days before that are not
history. A day is a spike when the lane has at least ``min_history`` days of history, spend is
above the median, and the robust score (spend - median) / scale reaches ``threshold``, where
scale = max(1.4826 * MAD, ``relative_floor`` * median, ``floor_cents``). The floors keep a
flat series (MAD = 0) from alerting on cent-level noise, and a flat zero series or a day equal
to the median never alerts. Money stays integer cents: medians of integer cents are whole or
half cents (exact in float64), and the baseline is that median rounded half up to a cent.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from metering.domain import AMOUNT_CENTS, API_KEY, DAY, DIMENSIONS, METER, METERS, PROJECT, WORKLOAD

LANE_DIMENSIONS = (API_KEY, WORKLOAD, PROJECT)
MAD_TO_SIGMA = 1.4826

ANOMALY_SCHEMA = {
    "dimension": pl.String,
    "lane": pl.String,
    DAY: pl.Date,
    AMOUNT_CENTS: pl.Int64,
    "baseline_cents": pl.Int64,
    "mad_cents": pl.Float64,
    "score": pl.Float64,
    "impact_cents": pl.Int64,
    "history_days": pl.Int64,
    "top_meter": pl.String,
    "top_meter_cents": pl.Int64,
}

_CHUNK_CELLS = 4_000_000  # lanes x days x window floats per median pass (~32 MB)


def spend_anomalies(
    daily_spend: pl.DataFrame,
    dimension: str,
    *,
    window: int = 28,
    min_history: int = 14,
    threshold: float = 4.0,
    relative_floor: float = 0.05,
    floor_cents: int = 100,
    min_impact_cents: int = 0,
) -> pl.DataFrame:
    """Spike days of one dimension's lanes, largest dollar impact first.

    Output: pl.DataFrame[dimension (the dimension's name), lane, day, amount_cents, baseline_cents,
    mad_cents (Float64), score (Float64), impact_cents (= amount_cents - baseline_cents),
    history_days, top_meter (label of the meter with the most spend that lane-day, null without a
    meter column), top_meter_cents], sorted by impact_cents desc, then lane, day.
    """
    _check(daily_spend, dimension, window, min_history)
    if daily_spend.filter(pl.col(DAY).is_not_null()).height == 0:
        return pl.DataFrame(schema=ANOMALY_SCHEMA)
    per_day = (
        daily_spend.filter(pl.col(DAY).is_not_null())  # the minimum-commitment true-up has no day
        .group_by(dimension, DAY)
        .agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum())
        .with_columns(pl.col(dimension).cast(pl.String))
    )
    lanes = per_day[dimension].unique().sort()
    first_day, last_day = per_day[DAY].min(), per_day[DAY].max()
    n_days = (last_day - first_day).days + 1
    lane_idx = pl.DataFrame({dimension: lanes, "_l": pl.int_range(0, lanes.len(), eager=True)})
    cells = per_day.join(lane_idx, on=dimension).with_columns(
        (pl.col(DAY) - pl.lit(first_day)).dt.total_days().alias("_d")
    )
    li, di, amt = (cells[c].to_numpy() for c in ("_l", "_d", AMOUNT_CENTS))
    values = np.zeros((lanes.len(), n_days), dtype=np.float64)
    values[li, di] = amt
    start = np.full(lanes.len(), n_days, dtype=np.int64)
    np.minimum.at(start, li, di)
    values[np.arange(n_days)[None, :] < start[:, None]] = np.nan

    median, mad, count = _rolling_baseline(values, window)
    with np.errstate(invalid="ignore"):
        scale = np.maximum(np.maximum(MAD_TO_SIGMA * mad, relative_floor * np.abs(median)), floor_cents)
        score = (values - median) / scale
        hit = (count >= min_history) & (values > median) & (score >= threshold)
    baseline = np.floor(median + 0.5)  # median is k/2 cents exactly; half up
    hit &= (values - baseline) >= max(min_impact_cents, 1)
    hl, hd = np.nonzero(hit)
    if hl.size == 0:
        return pl.DataFrame(schema=ANOMALY_SCHEMA)
    out = pl.DataFrame(
        {
            "dimension": [dimension] * hl.size,
            "lane": lanes.gather(hl).to_list(),
            AMOUNT_CENTS: values[hl, hd].astype(np.int64),
            "baseline_cents": baseline[hl, hd].astype(np.int64),
            "mad_cents": mad[hl, hd],
            "score": score[hl, hd],
            "history_days": count[hl, hd].astype(np.int64),
        }
    )
    out = out.with_columns(
        (pl.lit(first_day) + pl.duration(days=pl.Series(hd.astype(np.int64)))).cast(pl.Date).alias(DAY),
        (pl.col(AMOUNT_CENTS) - pl.col("baseline_cents")).alias("impact_cents"),
    )
    out = _top_meters(out, daily_spend, dimension)
    return out.select([pl.col(c).cast(t) for c, t in ANOMALY_SCHEMA.items()]).sort(
        ["impact_cents", "lane", DAY], descending=[True, False, False]
    )


def lane_anomalies(
    daily_spend: pl.DataFrame, dimensions: tuple[str, ...] = LANE_DIMENSIONS, **options
) -> pl.DataFrame:
    """``spend_anomalies`` for each dimension present in the frame, stacked, largest impact first."""
    frames = [spend_anomalies(daily_spend, d, **options) for d in dimensions if d in daily_spend.columns]
    if not frames:
        return pl.DataFrame(schema=ANOMALY_SCHEMA)
    return pl.concat(frames).sort(
        ["impact_cents", "dimension", "lane", DAY], descending=[True, False, False, False]
    )


def _check(frame: pl.DataFrame, dimension: str, window: int, min_history: int) -> None:
    if dimension not in DIMENSIONS or dimension == DAY:
        raise ValueError(f"unknown lane dimension {dimension!r}")
    for col in (DAY, dimension, AMOUNT_CENTS):
        if col not in frame.columns:
            raise ValueError(f"daily spend frame has no column {col!r}")
    if not frame.schema[AMOUNT_CENTS].is_integer():
        raise ValueError(f"column {AMOUNT_CENTS!r} must be integer cents, got {frame.schema[AMOUNT_CENTS]}")
    if window < 2:
        raise ValueError(f"window must be >= 2 days, got {window}")
    if not 1 <= min_history <= window:
        raise ValueError(f"min_history must be between 1 and window ({window}), got {min_history}")


def _rolling_baseline(values: np.ndarray, window: int):
    """Median, MAD and count of non-missing values over the ``window`` days before each day."""
    n_lanes, n_days = values.shape
    padded = np.concatenate([np.full((n_lanes, window), np.nan), values], axis=1)
    median = np.full(values.shape, np.nan)
    mad = np.full(values.shape, np.nan)
    count = np.zeros(values.shape, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // max(1, n_days * window))
    for lo in range(0, n_lanes, step):
        hist = np.lib.stride_tricks.sliding_window_view(padded[lo:lo + step], window, axis=1)[:, :n_days]
        n = np.sum(~np.isnan(hist), axis=2)
        med = _nan_median(hist, n)
        median[lo:lo + step] = med
        mad[lo:lo + step] = _nan_median(np.abs(hist - med[:, :, None]), n)
        count[lo:lo + step] = n
    return median, mad, count


def _nan_median(values: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN, given the count of non-NaN values (NaN where 0).

    np.sort puts NaN last, so the median is the mean of the two middle elements of the first n
    (np.nanmedian gives the same numbers, several times slower on many short windows).
    """
    ordered = np.sort(values, axis=-1)
    lo = np.maximum((n - 1) // 2, 0)[..., None]
    hi = np.maximum(n // 2, 0)[..., None]
    mid = (np.take_along_axis(ordered, lo, -1) + np.take_along_axis(ordered, hi, -1))[..., 0] / 2
    return np.where(n > 0, mid, np.nan)


def _top_meters(out: pl.DataFrame, daily_spend: pl.DataFrame, dimension: str) -> pl.DataFrame:
    if METER not in daily_spend.columns:
        return out.with_columns(pl.lit(None, pl.String).alias("top_meter"), pl.lit(None, pl.Int64)
                                .alias("top_meter_cents"))
    hits = out.select(pl.col("lane").alias(dimension), DAY).unique()
    by_meter = (
        daily_spend.with_columns(pl.col(dimension).cast(pl.String))
        .join(hits, on=[dimension, DAY])
        .group_by(dimension, DAY, METER)
        .agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum().alias("top_meter_cents"))
        .sort(["top_meter_cents", METER], descending=[True, False])
        .group_by(dimension, DAY, maintain_order=True)
        .first()
        .with_columns(
            pl.col(METER).replace_strict({k: m.label for k, m in METERS.items()}, default=pl.col(METER))
            .alias("top_meter")
        )
        .rename({dimension: "lane"})
        .select("lane", DAY, "top_meter", "top_meter_cents")
    )
    return out.join(by_meter, on=["lane", DAY], how="left")
