"""Allocation to the cent: split invoice lines over dimensions by the largest-remainder method.

Each line's amount is split in proportion to each part's billable-eligible quantity; every part
first gets the floor of its exact share, then the cents left over go one each to the parts with
the largest remainders (ties: the part whose key sorts first; days sort chronologically). So
every breakdown sums exactly to its line and all lines to the total. The minimum-commitment
true-up is its own part: ``(minimum commitment)`` in every string dimension, null ``day``.

``allocate_invoice`` is vectorised with Polars in exact integer arithmetic
(``amount_cents * quantity_micros`` as Int128, floor division and remainder, then a ranking of
remainders within each line), so a million rollup rows cost no Python loop per row. The only
string sort is the output order; ties are ranked by the row number in that order (integers).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from math import lcm

import numpy as np
import polars as pl

from metering.domain import AMOUNT_CENTS, DAY, DIMENSIONS, ENVIRONMENT, METER, QUANTITY_MICROS, QUANTITY_SCALE
from metering.invoice import MINIMUM_COMMIT_PART, TRUE_UP, Invoice, eligible_usage
from queries.usage import pack_keys, sort_by_keys

RATE_QUANTUM = Decimal("0.000001")  # effective unit rates are shown to a millionth of the currency
_LINE = [METER, ENVIRONMENT]


def allocate_cents(total_cents: int, keys: Sequence, weights: Sequence) -> list[int]:
    """Split ``total_cents`` over ``keys`` in proportion to ``weights`` (ints or Decimals >= 0).

    Largest remainder; ties go to the key that sorts first. The result sums to total_cents.
    """
    total_cents = int(total_cents)
    if len(keys) != len(weights):
        raise ValueError(f"keys ({len(keys)}) and weights ({len(weights)}) differ in length")
    if total_cents < 0:
        raise ValueError(f"total_cents must be >= 0, got {total_cents}")
    fractions = []
    for i, w in enumerate(weights):
        if isinstance(w, float):
            raise ValueError(f"weights[{i}] is a float; pass an int or a Decimal")
        f = Fraction(w)
        if f < 0:
            raise ValueError(f"weights[{i}] must be >= 0, got {w}")
        fractions.append(f)
    if not fractions:
        if total_cents:
            raise ValueError("cannot allocate a non-zero amount over no parts")
        return []
    denom = lcm(*(f.denominator for f in fractions))
    ints = [f.numerator * (denom // f.denominator) for f in fractions]
    whole = sum(ints)
    if whole == 0:
        if total_cents:
            raise ValueError("cannot allocate a non-zero amount when every weight is zero")
        return [0] * len(ints)
    shares = [divmod(total_cents * w, whole) for w in ints]
    out = [q for q, _ in shares]
    left = total_cents - sum(out)
    order = sorted(range(len(ints)), key=lambda i: (-shares[i][1], keys[i]))
    for i in order[:left]:
        out[i] += 1
    return out


def allocate_invoice(
    usage: pl.DataFrame, invoice: Invoice, card, dimensions: Sequence[str]
) -> pl.DataFrame:
    """Split every line of ``invoice`` over ``dimensions`` (any of DIMENSIONS).

    Returns one row per (dimensions..., meter, environment) part with its billable
    ``quantity_micros`` and ``amount_cents``; parts of a line sum exactly to the line, and all
    rows to ``invoice.total_cents``. The true-up is a last row with meter
    ``minimum_commit_true_up`` and part ``(minimum commitment)``. ``usage`` must be the usage
    the invoice was built from (a mismatch raises ValueError). ``card`` is accepted for API
    symmetry; the invoice already carries every price and the webhook policy.
    """
    dims = _dimensions(dimensions)
    lines = [ln for ln in invoice.lines if ln.meter != TRUE_UP]
    keys = [*dims, METER, ENVIRONMENT]
    out = _allocate_lines(_grouped_parts(
        eligible_usage(usage, invoice.org, invoice.period, invoice.usage_through), keys), lines, dims)
    if invoice.true_up_cents:
        out = pl.concat([out, _true_up_row(out.schema, dims, invoice.true_up_cents)], how="vertical")
    return out


def _grouped_parts(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Quantity per part (one row per distinct ``keys``), sorted by ``keys`` (nulls last).

    The rollup's keys have few distinct values, so they usually pack into one order-preserving
    UInt64 (``queries.usage.pack_keys``): a group-by and a sort on that integer replace a
    group-by and a sort on several string columns. The key columns of the result are decoded
    from the sorted codes (each key's rank looked up in its few distinct values) rather than
    carried through the group-by as ``first()`` of every key (a gather per column per group).
    """
    packed = pack_keys(rows, keys) if rows.height else None
    if packed is None:
        grouped = rows.group_by(keys).agg(pl.col(QUANTITY_MICROS).sum())
        return sort_by_keys(grouped, keys, nulls_last=True)
    codes, widths, decoders = packed
    summed = (
        pl.DataFrame({"_code": codes, QUANTITY_MICROS: rows[QUANTITY_MICROS]})
        .group_by("_code")
        .agg(pl.col(QUANTITY_MICROS).sum())
        .sort("_code")
    )
    ordered = summed["_code"].to_numpy()
    columns = []
    shift = sum(widths)
    for key, width, decode in zip(keys, widths, decoders, strict=True):
        shift -= width
        ranks = (ordered >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        columns.append(decode(ranks).alias(key))
    return pl.DataFrame([*columns, summed[QUANTITY_MICROS]])


def _allocate_lines(grouped: pl.DataFrame, lines, dims: list[str]) -> pl.DataFrame:
    """Largest remainder over ``grouped`` (one row per (dims..., meter, environment) part, in
    the output order: sorted by the part keys, nulls last).

    Integer work only: within a line, the output order is the tie order (dims ascending), so the
    row number ranks ties, and the cents go to the ``left`` parts with the largest (remainder,
    -row number).
    The per-line check of quantities against the invoice uses the same frame.
    """
    line_frame = pl.DataFrame(
        {
            METER: [ln.meter for ln in lines],
            ENVIRONMENT: [ln.environment for ln in lines],
            "_line": list(range(len(lines))),
            "_line_amount": [ln.amount_cents for ln in lines],
            "_line_qty": [ln.quantity_micros for ln in lines],
        },
        schema={METER: pl.String, ENVIRONMENT: pl.String, "_line": pl.Int64, "_line_amount": pl.Int64,
                "_line_qty": pl.Int64},
    )
    big = pl.Int128
    num = pl.col("_line_amount").cast(big) * pl.col(QUANTITY_MICROS).cast(big)
    parts = (
        grouped.join(line_frame, on=_LINE, how="inner", maintain_order="left")
        .with_columns(
            (num // pl.col("_line_qty").cast(big)).cast(pl.Int64).alias("_floor"),
            (num % pl.col("_line_qty").cast(big)).cast(pl.Int64).alias("_rem"),  # < _line_qty
        )
    )
    per_line = {
        i: (qty, floors)
        for i, qty, floors in parts.group_by("_line")
        .agg(pl.col(QUANTITY_MICROS).sum(), pl.col("_floor").sum())
        .iter_rows()
    }
    left = []
    for i, ln in enumerate(lines):
        got, floors = per_line.get(i, (0, 0))
        if got != ln.quantity_micros:
            raise ValueError(
                f"usage does not match the invoice line {ln.meter}/{ln.environment}: "
                f"{got} vs {ln.quantity_micros} quantity micros"
            )
        left.append(ln.amount_cents - floors)
    extra = np.zeros(parts.height, dtype=np.int64)
    if any(left):
        # sum(_rem) = left * line quantity and each _rem < line quantity, so more than `left`
        # parts have a positive remainder: parts with _rem = 0 never receive a cent. Winners:
        # the first `left` parts of each line ordered by (_rem descending, row number), one
        # integer lexsort (row number as the last tie-break) instead of a multi-column sort
        line = parts["_line"].to_numpy()
        rem = parts["_rem"].to_numpy()
        owed = np.asarray(left, dtype=np.int64)
        cand = np.flatnonzero((owed[line] > 0) & (rem > 0))
        order = cand[np.lexsort((cand, -rem[cand], line[cand]))]
        ordered_line = line[order]
        rank = np.arange(order.size) - np.searchsorted(ordered_line, ordered_line, side="left")
        extra[order[rank < owed[ordered_line]]] = 1
    return parts.select(
        *[pl.col(d) for d in dims],
        pl.col(METER),
        pl.col(ENVIRONMENT),
        pl.col(QUANTITY_MICROS),
        (pl.col("_floor") + pl.Series(extra)).alias(AMOUNT_CENTS),
    )


def breakdown(allocation: pl.DataFrame, dimension: str) -> pl.DataFrame:
    """Total per part of one dimension: [dimension, amount_cents], largest first (ties by key)."""
    if dimension not in allocation.columns:
        raise ValueError(f"the allocation has no column {dimension!r}")
    return (
        allocation.group_by(dimension)
        .agg(pl.col(AMOUNT_CENTS).sum())
        .sort([AMOUNT_CENTS, dimension], descending=[True, False], nulls_last=True)
    )


def effective_unit_rate(amount_cents: int, quantity_micros: int) -> Decimal | None:
    """Amount per billable unit (currency units, to a millionth, half up); None for no quantity."""
    if not quantity_micros:
        return None
    rate = Decimal(int(amount_cents)) * Decimal(QUANTITY_SCALE) / 100 / Decimal(int(quantity_micros))
    return rate.quantize(RATE_QUANTUM, rounding=ROUND_HALF_UP)


def _dimensions(dimensions: Sequence[str]) -> list[str]:
    if isinstance(dimensions, str):
        dimensions = [dimensions]
    out: list[str] = []
    for d in dimensions:
        if d not in DIMENSIONS:
            raise ValueError(f"unknown dimension {d!r} (allowed: {', '.join(DIMENSIONS)})")
        if d not in out and d not in _LINE:
            out.append(d)
    return out


def _true_up_row(schema, dims: list[str], cents: int) -> pl.DataFrame:
    row = {}
    for d in dims:
        row[d] = [None] if d == DAY else [MINIMUM_COMMIT_PART]
    row[METER] = [TRUE_UP]
    row[ENVIRONMENT] = [MINIMUM_COMMIT_PART]
    row[QUANTITY_MICROS] = [0]
    row[AMOUNT_CENTS] = [int(cents)]
    return pl.DataFrame(row, schema=schema)


__all__ = ["AMOUNT_CENTS", "allocate_cents", "allocate_invoice", "breakdown", "effective_unit_rate"]
