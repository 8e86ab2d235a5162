"""Display formats (currency, quantities, percents) used by every page."""

from __future__ import annotations

from decimal import Decimal

from metering.money import format_usd

__all__ = ["format_usd", "usd", "qty", "pct", "signed_usd"]


def usd(cents: int | None) -> str:
    return "—" if cents is None else format_usd(int(cents))


def signed_usd(cents: int) -> str:
    return ("+" if cents > 0 else "") + format_usd(int(cents))


def qty(value: Decimal | int | float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    v = Decimal(str(value))
    text = f"{v:,.0f}" if v == v.to_integral_value() else f"{v:,.2f}"
    return f"{text} {unit}".strip()


def pct(value: float | Decimal | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.{digits}f}%"
