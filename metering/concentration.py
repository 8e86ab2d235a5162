"""Spend concentration over one dimension: shares, top driver, Pareto, Herfindahl index, "driven by".

Input is a *spend frame*: rows that already carry money, i.e. a dimension column plus
``amount_cents`` (Int64), e.g. the output of ``metering.allocate.allocate_invoice``. Rows may
repeat a part (they are summed). Money stays integer cents; shares are exact fractions of
integers, given as Decimal scalars (and as Float64 columns in frames, for charts only).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import polars as pl

from metering.domain import AMOUNT_CENTS, DIMENSIONS, METER, METERS, WORKLOAD

SHARE = "share"
CUMULATIVE_SHARE = "cumulative_share"
RANK = "rank"

_SHARE_PLACES = Decimal("0.000001")
_POINT_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class Concentration:
    """How concentrated spend is across the parts of one dimension.

    ``parts``: pl.DataFrame[<dimension>, amount_cents Int64, share Float64, cumulative_share Float64,
    rank UInt32], largest first (ties: the part that sorts first). Shares are null when the total is 0.
    ``top_share``, ``top_n_share``, ``hhi`` (sum of squared shares, 0..1) are exact fractions of cents
    rounded half up to 6 places; ``hhi_points`` is the same on the 0..10000 scale (2 places).
    They are None when the total spend is 0.
    """

    dimension: str
    parts: pl.DataFrame
    total_cents: int
    top: str | None
    top_cents: int
    top_share: Decimal | None
    top_n: int
    top_n_share: Decimal | None
    hhi: Decimal | None
    hhi_points: Decimal | None


def spend_concentration(spend: pl.DataFrame, dimension: str, top_n: int = 3) -> Concentration:
    """Shares per part of ``dimension``, the top driver, top-N cumulative share and HHI.

    Raises ValueError naming the column if ``dimension`` is not a known dimension, a column is
    missing, or an amount is negative (spend frames hold charges, never credits).
    """
    _check_spend(spend, dimension)
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    parts = _parts(spend, dimension)
    amounts = [int(a) for a in parts[AMOUNT_CENTS].to_list()]
    total = sum(amounts)
    if total == 0:
        parts = parts.with_columns(
            pl.lit(None, pl.Float64).alias(SHARE), pl.lit(None, pl.Float64).alias(CUMULATIVE_SHARE)
        )
    else:
        parts = parts.with_columns(
            (pl.col(AMOUNT_CENTS) / total).alias(SHARE),
            (pl.col(AMOUNT_CENTS).cum_sum() / total).alias(CUMULATIVE_SHARE),
        )
    parts = parts.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias(RANK))
    top = parts[dimension][0] if parts.height else None
    top_cents = amounts[0] if amounts else 0
    if total == 0:
        return Concentration(dimension, parts, 0, top if parts.height else None, top_cents, None,
                             top_n, None, None, None)
    hhi = Fraction(sum(a * a for a in amounts), total * total)
    return Concentration(
        dimension=dimension,
        parts=parts,
        total_cents=total,
        top=None if top is None else str(top),
        top_cents=top_cents,
        top_share=_dec(Fraction(top_cents, total), _SHARE_PLACES),
        top_n=top_n,
        top_n_share=_dec(Fraction(sum(amounts[:top_n]), total), _SHARE_PLACES),
        hhi=_dec(hhi, _SHARE_PLACES),
        hhi_points=_dec(hhi * 10000, _POINT_PLACES),
    )


def driven_by(
    spend: pl.DataFrame,
    dimension: str,
    part: str | None = None,
    max_drivers: int = 2,
    cover: Decimal = Decimal("0.8"),
) -> str:
    """A plain-language sentence for one part (default: the largest) naming what drives its spend.

    E.g. ``"production-underwriting: 62% of spend, driven by HRS lookups and Expanded history
    (underwriting)"``. Meters are named by their label (metering.domain.METERS), workloads by
    name. Drivers are taken largest first until they cover ``cover`` of the part's spend or
    ``max_drivers`` are named. The meter list is left out when ``dimension`` is the meter, the
    workload list when it is the workload; columns absent from ``spend`` are skipped.
    The percentage is the exact share rounded half up to a whole percent.
    """
    _check_spend(spend, dimension)
    parts = _parts(spend, dimension)
    total = int(parts[AMOUNT_CENTS].sum()) if parts.height else 0
    if total == 0:
        return "no spend"
    if part is None:
        part = parts[dimension][0]
    row = parts.filter(pl.col(dimension) == part)
    if row.height == 0:
        raise ValueError(f"{dimension} {part!r} has no spend in this frame")
    part_cents = int(row[AMOUNT_CENTS][0])
    pct = _dec(Fraction(part_cents * 100, total), Decimal(1))
    label = str(part)
    if dimension == METER and part in METERS:
        label = METERS[part].label
    sentence = f"{label}: {pct}% of spend"
    if part_cents == 0:
        return sentence
    mine = spend.filter(pl.col(dimension) == part)
    meters = _drivers(mine, METER, part_cents, max_drivers, cover) if dimension != METER else []
    workloads = _drivers(mine, WORKLOAD, part_cents, max_drivers, cover) if dimension != WORKLOAD else []
    meter_names = [METERS[m].label if m in METERS else m for m in meters]
    if meter_names and workloads:
        return f"{sentence}, driven by {_join(meter_names)} ({_join(workloads)})"
    if meter_names:
        return f"{sentence}, driven by {_join(meter_names)}"
    if workloads:
        return f"{sentence}, driven by {_join(workloads)}"
    return sentence


def _check_spend(spend: pl.DataFrame, dimension: str) -> None:
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; expected one of {', '.join(DIMENSIONS)}")
    for col in (dimension, AMOUNT_CENTS):
        if col not in spend.columns:
            raise ValueError(f"spend frame has no column {col!r}")
    if not spend.schema[AMOUNT_CENTS].is_integer():
        raise ValueError(f"column {AMOUNT_CENTS!r} must be integer cents, got {spend.schema[AMOUNT_CENTS]}")
    if spend.height and (spend[AMOUNT_CENTS].min() or 0) < 0:
        raise ValueError(f"column {AMOUNT_CENTS!r} has a negative amount")


def _parts(spend: pl.DataFrame, dimension: str) -> pl.DataFrame:
    return (
        spend.group_by(dimension)
        .agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum())
        .sort([AMOUNT_CENTS, dimension], descending=[True, False])
    )


def _drivers(frame: pl.DataFrame, column: str, part_cents: int, max_drivers: int, cover: Decimal):
    if column not in frame.columns:
        return []
    ranked = _parts(frame, column)
    names, covered = [], 0
    for name, cents in ranked.iter_rows():
        if cents <= 0 or len(names) >= max_drivers:
            break
        names.append(str(name))
        covered += int(cents)
        if Fraction(covered, part_cents) >= Fraction(cover):
            break
    return names


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _dec(value: Fraction, places: Decimal) -> Decimal:
    """Exact half-up rounding of a non-negative fraction to ``places`` (e.g. Decimal("0.01"))."""
    digits = -places.as_tuple().exponent
    scaled = value * 10**digits
    units = (2 * scaled.numerator + scaled.denominator) // (2 * scaled.denominator)
    return Decimal(units).scaleb(-digits).quantize(places, rounding=ROUND_HALF_UP)
