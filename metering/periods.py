"""UTC calendar-month billing periods ("YYYY-MM")."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime

from metering.domain import PERIOD_RE


class BadPeriod(ValueError):
    pass


def parse_period(text: str) -> tuple[int, int]:
    if not isinstance(text, str) or not PERIOD_RE.match(text):
        raise BadPeriod(f"bad period {text!r}: expected YYYY-MM, e.g. 2026-03")
    y, m = text.split("-")
    return int(y), int(m)


def period_bounds(period: str) -> tuple[date, date]:
    """First and last day (inclusive) of the period."""
    y, m = parse_period(period)
    return date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])


def period_of(d: date | datetime) -> str:
    if isinstance(d, datetime):
        d = d.astimezone(UTC) if d.tzinfo else d
    return f"{d.year:04d}-{d.month:02d}"


def shift_period(period: str, months: int) -> str:
    y, m = parse_period(period)
    idx = y * 12 + (m - 1) + months
    return f"{idx // 12:04d}-{idx % 12 + 1:02d}"


def days_in_period(period: str) -> int:
    y, m = parse_period(period)
    return calendar.monthrange(y, m)[1]


def utcnow() -> datetime:
    return datetime.now(UTC)
