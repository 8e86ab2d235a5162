"""Display formats (currency, quantities, percents) used by every page."""

from __future__ import annotations

from decimal import Decimal

from metering.money import format_usd

__all__ = ["format_usd", "usd", "qty", "pct", "signed_usd", "md"]


_MD_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~:$&\"'")


def md(value: object) -> str:
    """Data (API key ids, names, user input) made inert inside markdown: every markdown-special
    ASCII character is backslash-escaped and line breaks become spaces, so a value can never
    become a link, an emoji shortcode, LaTeX, HTML or formatting. Use it for any data value
    placed in st.markdown / st.caption / st.info / st.success / st.error text."""
    text = " ".join(str(value).splitlines())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


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
