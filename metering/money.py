"""Money helpers: Decimal and integer cents only, never float."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """Round a Decimal amount to whole cents, half up, as an int."""
    return int((amount / CENT).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def cents_to_decimal(cents: int) -> Decimal:
    return (Decimal(cents) * CENT).quantize(CENT)


def format_usd(cents: int) -> str:
    """'$1,234.56' (negative as '-$1,234.56')."""
    sign = "-" if cents < 0 else ""
    c = abs(int(cents))
    return f"{sign}${c // 100:,}.{c % 100:02d}"


def json_money(cents: int):
    """A JSON number with at most two decimals equal to the exact cent amount.

    Returns a Decimal; use metering.jsonout.dumps to serialize it without float rounding.
    """
    return cents_to_decimal(cents)
