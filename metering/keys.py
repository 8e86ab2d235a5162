"""Key hygiene and unit economics: per-key consumption, key flags, cost per successful lookup,
traffic by channel.

Inputs are the usage frame (metering.domain.USAGE_SCHEMA, from queries.usage.load_usage), the
api_keys frame (queries.catalog.load_api_keys) and spend frames already priced/allocated
(``api_key`` [+ ``org``] + ``amount_cents`` Int64; per period: ``period`` + ``amount_cents``).
Money is integer cents; cost per lookup is an exact Decimal (USD, 6 places, half up).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import polars as pl

from metering.domain import (
    AMOUNT_CENTS,
    API_KEY,
    CHANNEL,
    CHANNELS,
    DAY,
    ELIGIBLE,
    ENVIRONMENT,
    EVENTS,
    LOOKUP_METER,
    METER,
    ORG,
    QUANTITY_MICROS,
    QUANTITY_SCALE,
    RETRY,
    STATUS,
    USAGE_SCHEMA,
)
from metering.money import format_usd

PERIOD = "period"

OUTSIDE_ENVIRONMENT = "outside_environment"
UNUSED = "unused"
REVOKED_BUT_USED = "revoked_but_used"
SPEND_JUMPED = "spend_jumped"
UNREGISTERED = "unregistered"
FLAGS = (REVOKED_BUT_USED, OUTSIDE_ENVIRONMENT, UNREGISTERED, SPEND_JUMPED, UNUSED)

FLAG_SCHEMA = {ORG: pl.String, API_KEY: pl.String, "flag": pl.String, "detail": pl.String, EVENTS: pl.Int64}


def key_consumption(usage: pl.DataFrame, spend: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per key: events (all traffic), failed events, billable quantity, spend and share of spend.

    Output: pl.DataFrame[org, api_key, events, failed_events, billable_quantity_micros,
    amount_cents (0 where the key has no spend row), share (Float64 fraction of total spend; null
    when the total is 0)], largest spend first, then most events, then org, api_key. ``spend`` has
    ``api_key`` (and ``org`` if it spans orgs) and ``amount_cents``; keys with spend but no usage
    rows are kept.
    """
    _check_usage(usage)
    per_key = usage.group_by(ORG, API_KEY).agg(
        pl.col(EVENTS).sum().alias(EVENTS),
        pl.col(EVENTS).filter(pl.col(STATUS) == "failed").sum().alias("failed_events"),
        pl.col(QUANTITY_MICROS).filter(pl.col(ELIGIBLE)).sum().alias("billable_quantity_micros"),
    )
    if spend is not None:
        _check_spend(spend, "spend", API_KEY)
        on = [ORG, API_KEY] if ORG in spend.columns else [API_KEY]
        money = spend.group_by(on).agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum())
        per_key = per_key.join(money, on=on, how="full", coalesce=True)
    else:
        per_key = per_key.with_columns(pl.lit(0, pl.Int64).alias(AMOUNT_CENTS))
    per_key = per_key.with_columns(
        pl.col(EVENTS, "failed_events", "billable_quantity_micros", AMOUNT_CENTS).fill_null(0).cast(pl.Int64)
    )
    total = int(per_key[AMOUNT_CENTS].sum())
    share = pl.col(AMOUNT_CENTS) / total if total else pl.lit(None, pl.Float64)
    return per_key.with_columns(share.alias("share")).sort(
        [AMOUNT_CENTS, EVENTS, ORG, API_KEY], descending=[True, True, False, False], nulls_last=True
    ).select(ORG, API_KEY, EVENTS, "failed_events", "billable_quantity_micros", AMOUNT_CENTS, "share")


def key_flags(
    usage: pl.DataFrame,
    keys: pl.DataFrame,
    as_of: date | datetime,
    *,
    unused_days: int = 60,
    current_spend: pl.DataFrame | None = None,
    previous_spend: pl.DataFrame | None = None,
    jump_factor: Decimal = Decimal("2"),
    min_jump_cents: int = 1000,
) -> pl.DataFrame:
    """Hygiene flags per key, one row per (key, flag): pl.DataFrame[org, api_key, flag, detail, events].

    Flags (``flag`` values; ``events`` counts the events behind the flag, null where none apply):
    - ``revoked_but_used``: events on a UTC day after the key's revocation day (or api_keys
      last_used_at after revoked_at);
    - ``outside_environment``: events whose environment differs from the key's issued environment;
    - ``unregistered``: events from a key id that is not in api_keys;
    - ``spend_jumped``: current spend >= ``jump_factor`` x previous spend (previous > 0) and up by at
      least ``min_jump_cents`` (needs ``current_spend`` and ``previous_spend``: api_key [+ org] +
      amount_cents); a key new this period is not a jump (lanes report it as new);
    - ``unused``: not revoked as of ``as_of`` and no use for at least ``unused_days`` days: the last
      use is the later of api_keys.last_used_at and the last usage day with events; a key never used
      counts from created_at. The usage frame must reach back ``unused_days`` for this to be exact.
    Sorted by flag (order of FLAGS), org, api_key.
    """
    _check_usage(usage)
    for col in ("org", "api_key", "environment", "created_at", "last_used_at", "revoked_at"):
        if col not in keys.columns:
            raise ValueError(f"api_keys frame has no column {col!r}")
    if unused_days < 1:
        raise ValueError(f"unused_days must be >= 1, got {unused_days}")
    as_of_dt = _as_datetime(as_of)
    as_of_day = as_of_dt.date()
    used = (  # one row per key, environment and day: the flags need nothing finer
        usage.filter(pl.col(EVENTS) > 0).group_by(ORG, API_KEY, ENVIRONMENT, DAY).agg(pl.col(EVENTS).sum())
    )
    k = keys.select(
        ORG, API_KEY, pl.col(ENVIRONMENT).alias("issued_env"),
        pl.col("created_at").dt.date().alias("created_day"),
        pl.col("last_used_at").dt.date().alias("last_used_day"),
        pl.col("revoked_at").dt.date().alias("revoked_day"),
        (pl.col("last_used_at") > pl.col("revoked_at")).fill_null(False).alias("used_after_revoke"),
        pl.col("revoked_at"),
    )
    rows: list[tuple] = []
    joined = used.join(k, on=[ORG, API_KEY], how="left")

    revoked = joined.filter(pl.col("revoked_day").is_not_null() & (pl.col(DAY) > pl.col("revoked_day")))
    after = revoked.group_by(ORG, API_KEY).agg(
        pl.col(EVENTS).sum(), pl.col(DAY).min().alias("first"), pl.col(DAY).max().alias("last"),
        pl.col("revoked_day").first(),
    )
    flagged = set()
    for org, key, ev, first, last, rday in after.sort(ORG, API_KEY).iter_rows():
        flagged.add((org, key))
        detail = f"revoked {rday.isoformat()}, {ev} events on {first.isoformat()}..{last.isoformat()}"
        rows.append((org, key, REVOKED_BUT_USED, detail, ev))
    late = k.filter(pl.col("used_after_revoke")).select(ORG, API_KEY, "revoked_at")
    for org, key, rts in late.iter_rows():
        if (org, key) not in flagged:
            detail = f"last used after its revocation at {rts.isoformat()}"
            rows.append((org, key, REVOKED_BUT_USED, detail, None))

    outside = (
        joined.filter(pl.col("issued_env").is_not_null() & (pl.col(ENVIRONMENT) != pl.col("issued_env")))
        .group_by(ORG, API_KEY)
        .agg(pl.col(EVENTS).sum(), pl.col("issued_env").first(), pl.col(ENVIRONMENT).unique().sort())
        .sort(ORG, API_KEY)
    )
    for org, key, ev, issued, envs in outside.iter_rows():
        rows.append((org, key, OUTSIDE_ENVIRONMENT,
                     f"issued for {issued}, {ev} events in {', '.join(envs)}", ev))

    unknown = joined.filter(pl.col("issued_env").is_null()).group_by(ORG, API_KEY).agg(pl.col(EVENTS).sum())
    for org, key, ev in unknown.sort(ORG, API_KEY).iter_rows():
        rows.append((org, key, UNREGISTERED, f"{ev} events from a key not in api_keys", ev))

    if current_spend is not None and previous_spend is not None:
        rows.extend(_jumps(current_spend, previous_spend, jump_factor, min_jump_cents))

    last_usage = (
        used.filter(pl.col(DAY) <= as_of_day).group_by(ORG, API_KEY).agg(pl.col(DAY).max().alias("u"))
    )
    idle = (
        k.join(last_usage, on=[ORG, API_KEY], how="left")
        .filter(pl.col("revoked_at").is_null() | (pl.col("revoked_at") > as_of_dt))
        .with_columns(pl.max_horizontal("last_used_day", "u").alias("last"))
        .sort(ORG, API_KEY)
    )
    limit = as_of_day - timedelta(days=unused_days)
    for org, key, created, last in idle.select(ORG, API_KEY, "created_day", "last").iter_rows():
        if last is None and created is not None and created <= limit:
            rows.append((org, key, UNUSED, f"never used since created {created.isoformat()}", None))
        elif last is not None and last <= limit:
            detail = f"last used {last.isoformat()}, {(as_of_day - last).days} days before {as_of_day}"
            rows.append((org, key, UNUSED, detail, None))

    order = {f: i for i, f in enumerate(FLAGS)}
    rows.sort(key=lambda r: (order[r[2]], r[0] or "", r[1]))
    return pl.DataFrame(rows, schema=FLAG_SCHEMA, orient="row")


def cost_per_lookup(usage: pl.DataFrame, spend_by_period: pl.DataFrame) -> pl.DataFrame:
    """Cost per successful (billable-eligible) lookup per period, and its trend.

    ``spend_by_period``: ``period`` (YYYY-MM) + ``amount_cents`` (the total invoiced spend of the
    period, all meters). Output: pl.DataFrame[period, lookups (Decimal), amount_cents,
    cost_per_lookup (Decimal USD, 6 places half up; null without lookups), change (Decimal vs the
    previous row; null on the first), change_pct (Float64)], oldest period first, over the periods
    of ``spend_by_period``.
    """
    _check_usage(usage)
    _check_spend(spend_by_period, "spend_by_period", PERIOD)
    lookups = (
        usage.filter(pl.col(ELIGIBLE) & (pl.col(METER) == LOOKUP_METER))
        .group_by(DAY)
        .agg(pl.col(QUANTITY_MICROS).sum().alias("q"))
        .group_by(pl.col(DAY).dt.strftime("%Y-%m").alias(PERIOD))
        .agg(pl.col("q").sum())
    )
    money = spend_by_period.group_by(PERIOD).agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum())
    joined = money.join(lookups, on=PERIOD, how="left").with_columns(pl.col("q").fill_null(0)).sort(PERIOD)
    out, prev = [], None
    for period, cents, q in joined.select(PERIOD, AMOUNT_CENTS, "q").iter_rows():
        cost = _usd6(Fraction(cents * 10**4, q)) if q else None  # cents/100 per (q/10**6) lookups
        change = cost - prev if cost is not None and prev is not None else None
        pct = float(change / prev * 100) if change is not None and prev else None
        out.append((period, Decimal(q) / QUANTITY_SCALE, cents, cost, change, pct))
        prev = cost
    return pl.DataFrame(
        out,
        schema={PERIOD: pl.String, "lookups": pl.Decimal(38, 6), AMOUNT_CENTS: pl.Int64,
                "cost_per_lookup": pl.Decimal(38, 6), "change": pl.Decimal(38, 6), "change_pct": pl.Float64},
        orient="row",
    )


def traffic_by_channel(usage: pl.DataFrame, by: str | None = None) -> pl.DataFrame:
    """Traffic per channel (api, operator, delivery), API traffic apart from the rest.

    Output: pl.DataFrame[channel, (by,) is_api, events, success_events, failed_events, retry_events
    (attempt > 1, success or failed), billable_events (billable-eligible), billable_quantity_micros,
    share_of_events (Float64, of all events in the frame)]. Without ``by`` every channel has a row
    (zeros when silent), in the order api, operator, delivery.
    """
    _check_usage(usage)
    keys = [CHANNEL] if by is None else [CHANNEL, by]
    if by is not None and by not in usage.columns:
        raise ValueError(f"usage frame has no column {by!r}")
    agg = usage.group_by(keys).agg(
        pl.col(EVENTS).sum().alias(EVENTS),
        pl.col(EVENTS).filter(pl.col(STATUS) == "success").sum().alias("success_events"),
        pl.col(EVENTS).filter(pl.col(STATUS) == "failed").sum().alias("failed_events"),
        pl.col(EVENTS).filter(pl.col(RETRY)).sum().alias("retry_events"),
        pl.col(EVENTS).filter(pl.col(ELIGIBLE)).sum().alias("billable_events"),
        pl.col(QUANTITY_MICROS).filter(pl.col(ELIGIBLE)).sum().alias("billable_quantity_micros"),
    )
    if by is None:
        agg = pl.DataFrame({CHANNEL: list(CHANNELS)}).join(agg, on=CHANNEL, how="left")
    counts = [EVENTS, "success_events", "failed_events", "retry_events", "billable_events",
              "billable_quantity_micros"]
    total = int(usage[EVENTS].sum()) if usage.height else 0
    order = {c: i for i, c in enumerate(CHANNELS)}
    agg = agg.with_columns(
        pl.col(counts).fill_null(0).cast(pl.Int64),
        (pl.col(CHANNEL) == "api").alias("is_api"),
        pl.col(CHANNEL).replace_strict(order, default=len(CHANNELS)).alias("_o"),
    ).with_columns((pl.col(EVENTS) / total if total else pl.lit(None, pl.Float64)).alias("share_of_events"))
    return agg.sort(["_o", *keys[1:]]).select(*keys, "is_api", *counts, "share_of_events")


def _jumps(current: pl.DataFrame, previous: pl.DataFrame, factor: Decimal, min_cents: int) -> list[tuple]:
    _check_spend(current, "current_spend", API_KEY)
    _check_spend(previous, "previous_spend", API_KEY)
    on = [ORG, API_KEY] if ORG in current.columns and ORG in previous.columns else [API_KEY]
    cur = current.group_by(on).agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum().alias("c"))
    prev = previous.group_by(on).agg(pl.col(AMOUNT_CENTS).cast(pl.Int64).sum().alias("p"))
    both = cur.join(prev, on=on, how="inner").sort(on)
    f = Fraction(factor)
    out = []
    for row in both.iter_rows(named=True):
        c, p = row["c"], row["p"]
        if p > 0 and c >= f * p and c - p >= min_cents:
            times = _usd6(Fraction(c, p)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
            detail = f"spend {format_usd(c)} vs {format_usd(p)} the previous period (x{times})"
            out.append((row.get(ORG), row[API_KEY], SPEND_JUMPED, detail, None))
    return out


def _check_usage(usage: pl.DataFrame) -> None:
    missing = [c for c in USAGE_SCHEMA if c not in usage.columns]
    if missing:
        raise ValueError(f"usage frame has no column {missing[0]!r}")


def _check_spend(frame: pl.DataFrame, name: str, key: str) -> None:
    for col in (key, AMOUNT_CENTS):
        if col not in frame.columns:
            raise ValueError(f"{name} frame has no column {col!r}")
    if not frame.schema[AMOUNT_CENTS].is_integer():
        got = frame.schema[AMOUNT_CENTS]
        raise ValueError(f"{name} column {AMOUNT_CENTS!r} must be integer cents, got {got}")


def _usd6(value: Fraction) -> Decimal:
    """Exact half-up rounding to 6 places (value >= 0)."""
    scaled = value * 10**6
    units = (2 * scaled.numerator + scaled.denominator) // (2 * scaled.denominator)
    return Decimal(units).scaleb(-6)


def _as_datetime(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"as_of {value.isoformat()} has no UTC offset")
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, 23, 59, 59, 999999, tzinfo=UTC)
