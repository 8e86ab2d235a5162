"""Key hygiene and unit economics on a small hand-made api_keys table and usage frame; the
api_keys read (queries.catalog.load_api_keys) on SQLite and PostgreSQL feeds the same flags."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa

from metering.domain import USAGE_SCHEMA
from metering.keys import (
    OUTSIDE_ENVIRONMENT,
    REVOKED_BUT_USED,
    SPEND_JUMPED,
    UNREGISTERED,
    UNUSED,
    cost_per_lookup,
    key_consumption,
    key_flags,
    traffic_by_channel,
)
from queries.catalog import API_KEYS_SCHEMA, load_api_keys
from queries.schema import api_keys
from queries.usage import UnscopedQuery

M = 1_000_000
ACME = ("acme", "uw", "production")  # org, project, environment


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def usage_rows(rows) -> pl.DataFrame:
    """rows: (day, org, project, env, key, meter, channel, status, retry, quantity, events)."""
    out = []
    for day, org, project, env, key, meter, channel, status, retry, qty, events in rows:
        eligible = status == "success" and not (meter == "webhook_delivery" and retry)
        out.append((date.fromisoformat(day), org, project, env, key, meter, "underwriting", channel, status,
                    retry, eligible, qty * M, events))
    return pl.DataFrame(out, schema=USAGE_SCHEMA, orient="row")


KEYS = [
    # org, key, project, issued env, created, last_used_at, revoked_at
    ("acme", "k-prod", "uw", "production", "2025-12-01", "2026-03-30", None),
    ("acme", "k-idle", "uw", "sandbox", "2025-10-01", "2026-01-15", None),
    ("acme", "k-never", "uw", "production", "2026-01-01", None, None),
    ("acme", "k-new", "uw", "production", "2026-03-01", None, None),
    ("acme", "k-stale", "uw", "production", "2025-10-01", "2026-01-01", None),
    ("acme", "k-rev", "uw", "production", "2025-10-01", "2026-03-12", "2026-03-10T12:00:00"),
    ("acme", "k-revold", "uw", "production", "2025-10-01", "2026-01-02", "2026-01-01T00:00:00"),
    ("acme", "k-gone", "uw", "production", "2025-10-01", "2025-11-01", "2025-12-01T00:00:00"),
    ("globex", "k-prod", "gx", "sandbox", "2026-01-01", "2026-03-30", None),
]


def keys_frame() -> pl.DataFrame:
    rows = [(o, k, p, e, ts(c), ts(lu) if lu else None, ts(r) if r else None)
            for o, k, p, e, c, lu, r in KEYS]
    return pl.DataFrame(rows, schema=API_KEYS_SCHEMA, orient="row")


USAGE = usage_rows([
    ("2026-03-30", "acme", "uw", "production", "k-prod", "lookup", "api", "success", False, 100, 100),
    ("2026-03-29", "acme", "uw", "sandbox", "k-prod", "lookup", "api", "success", False, 5, 5),  # outside env
    ("2026-02-15", "acme", "uw", "production", "k-stale", "lookup", "api", "success", False, 1, 1),
    ("2026-03-10", "acme", "uw", "production", "k-rev", "lookup", "api", "success", False, 2, 2),  # same day
    ("2026-03-12", "acme", "uw", "production", "k-rev", "lookup", "api", "failed", False, 3, 3),  # after
    ("2026-03-20", "acme", "uw", "production", "k-ghost", "lookup", "api", "success", False, 4, 4),
    ("2026-03-30", "globex", "gx", "sandbox", "k-prod", "lookup", "api", "success", False, 7, 7),
])


def test_key_flags_from_a_small_api_keys_table():
    flags = key_flags(USAGE, keys_frame(), date(2026, 3, 31), unused_days=60)
    got = flags.select("org", "api_key", "flag", "events").rows()
    assert got == [
        # k-rev revoked 2026-03-10 12:00: the 2 events that day may predate it; the 3 on 03-12 do not
        ("acme", "k-rev", REVOKED_BUT_USED, 3),
        # k-revold: no usage rows, but api_keys says it was last used after its revocation
        ("acme", "k-revold", REVOKED_BUT_USED, None),
        # acme/k-prod issued for production, 5 events in sandbox (globex/k-prod is another key)
        ("acme", "k-prod", OUTSIDE_ENVIRONMENT, 5),
        ("acme", "k-ghost", UNREGISTERED, 4),
        # k-idle last used 2026-01-15: 16 + 28 + 31 = 75 days >= 60; k-never created 2026-01-01 <= 2026-01-30
        # (k-stale: api_keys says 2026-01-01 but usage shows 2026-02-15, 44 days: not flagged;
        #  k-new: created 2026-03-01, too recent; k-gone: revoked)
        ("acme", "k-idle", UNUSED, None),
        ("acme", "k-never", UNUSED, None),
    ]
    details = dict(zip(flags["api_key"], flags["detail"], strict=False))
    assert details["k-idle"] == "last used 2026-01-15, 75 days before 2026-03-31"
    assert details["k-prod"] == "issued for production, 5 events in sandbox"
    assert details["k-rev"] == "revoked 2026-03-10, 3 events on 2026-03-12..2026-03-12"


def test_unused_threshold_edge_and_as_of_before_revocation():
    # with unused_days=75, k-idle (exactly 75 days) is still flagged, at 76 it is not
    ids = lambda f: [k for k, fl in f.select("api_key", "flag").rows() if fl == UNUSED]  # noqa: E731
    assert "k-idle" in ids(key_flags(USAGE, keys_frame(), date(2026, 3, 31), unused_days=75))
    assert "k-idle" not in ids(key_flags(USAGE, keys_frame(), date(2026, 3, 31), unused_days=76))
    # as of 2025-11-30 k-gone (revoked 2025-12-01) was not yet revoked; idle since 2025-11-01 = 29 days
    assert "k-gone" in ids(key_flags(USAGE, keys_frame(), date(2025, 11, 30), unused_days=29))


def test_spend_jumped():
    cur = pl.DataFrame({"api_key": ["k-prod", "k-idle", "k-new2", "k-x"],
                        "amount_cents": [5000, 100, 9000, 4000]})
    prev = pl.DataFrame({"api_key": ["k-prod", "k-idle", "k-x"], "amount_cents": [2000, 20, 2000]})
    flags = key_flags(USAGE.clear(), keys_frame().clear(), date(2026, 3, 31),
                      current_spend=cur, previous_spend=prev)
    # k-prod: 5000 >= 2 x 2000 and +3000 >= 1000 -> jump x2.5; k-x: exactly 2 x 2000, +2000 -> jump x2.0
    # k-idle: x5 but only +80 cents; k-new2: no previous spend (a new lane, not a jump)
    assert flags.select("api_key", "flag", "detail").rows() == [
        ("k-prod", SPEND_JUMPED, "spend $50.00 vs $20.00 the previous period (x2.5)"),
        ("k-x", SPEND_JUMPED, "spend $40.00 vs $20.00 the previous period (x2.0)"),
    ]
    flags = key_flags(USAGE.clear(), keys_frame().clear(), date(2026, 3, 31), current_spend=cur,
                      previous_spend=prev, jump_factor=Decimal("2.01"))
    assert flags["api_key"].to_list() == ["k-prod"]


def test_key_consumption_and_share():
    usage = usage_rows([
        ("2026-03-01", *ACME, "k1", "lookup", "api", "success", False, 30, 30),
        ("2026-03-01", *ACME, "k1", "lookup", "api", "failed", False, 6, 6),
        ("2026-03-02", "acme", "uw", "production", "k2", "report_job", "api", "success", False, 2, 2),
        ("2026-03-02", "acme", "uw", "production", "k3", "lookup", "api", "failed", False, 9, 9),
    ])
    spend = pl.DataFrame({"api_key": ["k1", "k2", "k4"], "amount_cents": [900, 2400, 300]})
    out = key_consumption(usage, spend)
    # total spend 900 + 2400 + 300 = 3600; k3 has traffic but no spend; k4 spend but no traffic rows
    cols = ("api_key", "events", "failed_events", "billable_quantity_micros", "amount_cents")
    assert out.select(cols).rows() == [
        ("k2", 2, 0, 2 * M, 2400),
        ("k1", 36, 6, 30 * M, 900),
        ("k4", 0, 0, 0, 300),
        ("k3", 9, 9, 0, 0),
    ]
    assert out["share"].to_list() == pytest.approx([2400 / 3600, 900 / 3600, 300 / 3600, 0.0])


def test_cost_per_successful_lookup_and_trend():
    usage = usage_rows([
        ("2026-02-03", *ACME, "k1", "lookup", "api", "success", False, 1000, 1000),
        ("2026-02-03", *ACME, "k1", "lookup", "api", "failed", False, 50, 50),
        ("2026-02-04", *ACME, "k1", "expanded_history", "api", "success", False, 200, 200),
        ("2026-03-09", *ACME, "k1", "lookup", "api", "success", False, 1200, 1200),
        ("2026-05-09", *ACME, "k1", "lookup", "api", "success", False, 3, 3),
    ])
    spend = pl.DataFrame({"period": ["2026-03", "2026-02", "2026-04", "2026-05"],
                          "amount_cents": [33000, 30000, 500, 100]})
    out = cost_per_lookup(usage, spend)
    # Feb: $300.00 / 1000 successful lookups = 0.300000 (failed lookups and other meters excluded)
    # Mar: $330.00 / 1200 = 0.275000, change -0.025 = -8.33%; Apr: no lookups -> null
    # May: $1.00 / 3 = 0.333333... -> 0.333333
    assert out["period"].to_list() == ["2026-02", "2026-03", "2026-04", "2026-05"]
    assert out["lookups"].to_list() == [Decimal(1000), Decimal(1200), Decimal(0), Decimal(3)]
    assert out["cost_per_lookup"].to_list() == [Decimal("0.300000"), Decimal("0.275000"), None,
                                                Decimal("0.333333")]
    assert out["change"].to_list() == [None, Decimal("-0.025000"), None, None]
    assert out["change_pct"][1] == pytest.approx(-0.025 / 0.3 * 100)


def test_traffic_by_channel_keeps_delivery_and_operator_apart():
    usage = usage_rows([
        ("2026-03-01", *ACME, "k1", "lookup", "api", "success", False, 100, 100),
        ("2026-03-01", *ACME, "k1", "lookup", "api", "failed", False, 10, 10),
        ("2026-03-01", *ACME, "k1", "webhook_delivery", "delivery", "success", False, 50, 50),
        ("2026-03-01", *ACME, "k1", "webhook_delivery", "delivery", "success", True, 7, 7),
        ("2026-03-01", *ACME, "k1", "webhook_delivery", "delivery", "failed", True, 3, 3),
    ])
    out = traffic_by_channel(usage)
    # 170 events in all: api 110 (10 failed), delivery 60 (3 failed, 10 retries, 50 billable), operator 0
    assert out.select("channel", "is_api", "events", "success_events", "failed_events", "retry_events",
                      "billable_events").rows() == [
        ("api", True, 110, 100, 10, 0, 100),
        ("operator", False, 0, 0, 0, 0, 0),
        ("delivery", False, 60, 57, 3, 10, 50),
    ]
    assert out["share_of_events"].to_list() == pytest.approx([110 / 170, 0.0, 60 / 170])
    by_meter = traffic_by_channel(usage, by="meter")
    assert by_meter.select("channel", "meter", "events").rows() == [
        ("api", "lookup", 110), ("delivery", "webhook_delivery", 60)
    ]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="usage frame has no column 'eligible'"):
        key_consumption(USAGE.drop("eligible"))
    with pytest.raises(ValueError, match="api_keys frame has no column 'revoked_at'"):
        key_flags(USAGE, keys_frame().drop("revoked_at"), date(2026, 3, 31))
    with pytest.raises(ValueError, match="spend_by_period frame has no column 'period'"):
        cost_per_lookup(USAGE, pl.DataFrame({"amount_cents": [1]}))
    with pytest.raises(ValueError, match="no UTC offset"):
        key_flags(USAGE, keys_frame(), datetime(2026, 3, 31))  # noqa: DTZ001


def test_api_keys_read_is_scoped_and_feeds_the_flags(engine):
    with engine.begin() as conn:
        conn.execute(api_keys.insert(), [
            {"org": o, "api_key": k, "project": p, "environment": e, "created_at": ts(c),
             "last_used_at": ts(lu) if lu else None, "revoked_at": ts(r) if r else None}
            for o, k, p, e, c, lu, r in KEYS
        ])
    loaded = load_api_keys(engine, {"acme", "globex"})
    assert loaded.schema == pl.Schema(API_KEYS_SCHEMA)
    assert loaded.equals(keys_frame().sort("org", "api_key"))
    only_globex = load_api_keys(engine, ["globex"])
    assert only_globex.select("org", "api_key", "environment").rows() == [("globex", "k-prod", "sandbox")]
    assert load_api_keys(engine, []).height == 0
    with pytest.raises(UnscopedQuery):
        load_api_keys(engine, None)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one() == len(KEYS)
    flags = key_flags(USAGE, loaded, date(2026, 3, 31))
    assert flags.select("api_key", "flag").rows() == [
        ("k-rev", REVOKED_BUT_USED), ("k-revold", REVOKED_BUT_USED), ("k-prod", OUTSIDE_ENVIRONMENT),
        ("k-ghost", UNREGISTERED), ("k-idle", UNUSED), ("k-never", UNUSED),
    ]
