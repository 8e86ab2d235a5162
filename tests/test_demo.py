"""Demo data: the generator's frame is valid, deterministic and carries every story the pages
need; the `demo` command fills SQLite and PostgreSQL, and `--if-empty` is then a no-op."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa

from metering.cli import build_parser
from metering.demo import DEFAULT_RATE_CARD, LATE_ORG, demo_catalog, generate_events, report_spike_days
from metering.domain import CHANNELS, ENVIRONMENTS, METER_NAMES, SLUG_RE, STATUSES
from metering.ingest import events_from_frame
from metering.invoice import TRUE_UP, price_quantities
from metering.periods import period_of, shift_period
from metering.pricing import parse_rate_card
from queries.schema import (
    api_keys,
    ingest_runs,
    organizations,
    rate_cards,
    restatements,
    usage_daily,
    usage_events,
)

END = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)  # a Wednesday afternoon, mid-period


@pytest.fixture(scope="module")
def full() -> pl.DataFrame:
    """The default-size frame (6 orgs, 396 days) up to END."""
    return generate_events(end=END)


def _daily(frame: pl.DataFrame, *filters) -> pl.DataFrame:
    f = frame.filter(*filters) if filters else frame
    return f.group_by(pl.col("occurred_at").dt.date().alias("day")).len().sort("day")


# --- the frame -------------------------------------------------------------------------


def test_same_seed_same_frame_other_seed_other_frame():
    a = generate_events(days=40, seed=3, end=END)
    b = generate_events(days=40, seed=3, end=END)
    c = generate_events(days=40, seed=4, end=END)
    assert a.height > 1000
    assert a.equals(b)
    assert not a.select(pl.exclude("event_id")).equals(c.select(pl.exclude("event_id")))


def test_every_event_passes_the_ingestion_rules(full):
    f = full
    assert f.columns == ["event_id", "occurred_at", "org", "project", "environment", "api_key", "meter",
                         "workload", "channel", "quantity", "status", "attempt"]
    assert f.schema["occurred_at"] == pl.Datetime("us", "UTC")
    assert f.null_count().sum_horizontal().item() == 0
    assert f["event_id"].str.len_chars().is_between(1, 128).all()
    assert f.select(pl.struct("org", "event_id").is_unique().all()).item()
    for col in ("org", "project", "workload"):
        bad = [v for v in f[col].unique().to_list() if not SLUG_RE.match(v)]
        assert bad == [], col
    assert set(f["environment"].unique()) <= set(ENVIRONMENTS)
    assert set(f["meter"].unique()) == set(METER_NAMES)
    assert set(f["channel"].unique()) == set(CHANNELS)
    assert set(f["status"].unique()) == set(STATUSES)
    assert f["attempt"].min() >= 1
    # quantities: exact decimals >= 0 (checked through Decimal, not float)
    quantities = {Decimal(q) for q in f["quantity"].unique().to_list()}
    assert min(quantities) >= 0
    assert all(q == q.to_integral_value() for q in quantities)
    assert f["api_key"].str.starts_with("key_").all()
    # and the ingestion module's own validation accepts every row
    parsed = events_from_frame(f, "demo")
    assert parsed.rejected.height == 0
    assert parsed.good.height == f.height


def test_channels_and_quantities_fit_their_meters(full):
    by_meter = full.group_by("meter").agg(pl.col("channel").unique().sort())
    channels = dict(zip(by_meter["meter"], by_meter["channel"].to_list(), strict=True))
    assert channels["webhook_delivery"] == ["delivery"]
    assert channels["assisted_review"] == ["operator"]
    for m in ("lookup", "expanded_history", "report_job", "export_records"):
        assert channels[m] == ["api"]
    q = full.with_columns(pl.col("quantity").cast(pl.Int64))
    exports = q.filter(pl.col("meter") == "export_records")["quantity"]
    assert exports.min() >= 200 and exports.max() <= 20_000 and exports.n_unique() > 100
    assert q.filter(pl.col("meter") != "export_records")["quantity"].unique().to_list() == [1]


def test_default_size_and_meter_mix(full):
    assert 300_000 <= full.height <= 600_000
    n = dict(full.group_by("meter").len().iter_rows())
    assert n["lookup"] > n["webhook_delivery"] > n["expanded_history"] > n["report_job"]
    assert 0.05 < n["expanded_history"] / n["lookup"] < 0.3
    # report jobs: a few per day across the orgs
    assert 3 < n["report_job"] / 396 < 40


def test_thirteen_months_up_to_end_and_the_open_period_has_data(full):
    first, last = full["occurred_at"].min(), full["occurred_at"].max()
    assert first.date() == END.date() - timedelta(days=395)
    assert last <= END and last > END - timedelta(hours=1)
    periods = set(full["occurred_at"].dt.strftime("%Y-%m").unique())
    current = period_of(END)
    assert {shift_period(current, -k) for k in range(13)} <= periods
    assert full.filter(pl.col("occurred_at").dt.strftime("%Y-%m") == current).height > 10_000
    assert full.filter(pl.col("occurred_at").dt.date() == END.date()).height > 100


def test_no_event_after_end_for_an_end_early_in_the_day():
    end = datetime(2026, 12, 1, 0, 40, tzinfo=UTC)
    f = generate_events(days=10, end=end)
    assert f["occurred_at"].max() <= end
    assert f["occurred_at"].min() >= datetime(2026, 11, 22, tzinfo=UTC)


def test_weekdays_carry_far_more_traffic_than_weekends(full):
    d = _daily(full).with_columns(weekend=pl.col("day").dt.weekday() >= 6)
    d = d.filter(pl.col("day") < END.date())  # the open day is partial
    mean = dict(d.group_by("weekend").agg(pl.col("len").mean()).iter_rows())
    assert mean[False] > 3 * mean[True]


def test_traffic_grows_over_the_year(full):
    eligible = full.filter(pl.col("status") == "success", pl.col("meter") == "lookup")
    months = dict(eligible.group_by(pl.col("occurred_at").dt.strftime("%Y-%m")).len().iter_rows())
    current = period_of(END)
    first_full, last_full = shift_period(current, -12), shift_period(current, -1)
    assert months[last_full] > 1.25 * months[first_full]


def test_failed_calls_and_webhook_retries(full):
    failed_share = (full["status"] == "failed").mean()
    assert 0.01 <= failed_share <= 0.03
    hooks = full.filter(pl.col("meter") == "webhook_delivery")
    retry_share = (hooks["attempt"] > 1).mean()
    assert 0.03 <= retry_share <= 0.08
    assert set(hooks["attempt"].unique()) == {1, 2, 3}
    assert full.filter(pl.col("meter") != "webhook_delivery")["attempt"].unique().to_list() == [1]


def test_one_report_heavy_spike_in_the_last_closed_period(full):
    jobs = full.filter(pl.col("meter") == "report_job", pl.col("occurred_at").dt.weekday() <= 5)
    daily = jobs.group_by("org", pl.col("occurred_at").dt.date().alias("day")).len()
    median = daily.group_by("org").agg(pl.col("len").median().alias("median"))
    spikes = daily.join(median, on="org").filter(pl.col("len") >= 8 * pl.col("median")).sort("day")
    assert spikes["org"].unique().to_list() == ["delta-payroll"]
    assert spikes.height == 3
    days = spikes["day"].to_list()
    assert {period_of(d) for d in days} == {shift_period(period_of(END), -1)}
    assert days == report_spike_days(END)
    assert all(d.weekday() < 5 for d in days)


def test_a_sandbox_key_is_used_against_production(full):
    per_key = full.group_by("org", "api_key").agg(
        sandbox=(pl.col("environment") == "sandbox").sum(),
        production=(pl.col("environment") == "production").sum(),
        first_prod=pl.col("occurred_at").filter(pl.col("environment") == "production").min(),
    )
    mixed = per_key.filter(pl.col("sandbox") > 10 * pl.col("production"), pl.col("production") > 0)
    assert mixed.select("org", "api_key").rows() == [("acme-insurance", "key_acme_wr_sbx_1")]
    assert mixed["first_prod"].item() >= END - timedelta(days=41)
    issued = {k.api_key: k.environment for k in demo_catalog().keys}
    assert issued["key_acme_wr_sbx_1"] == "sandbox"


def test_a_key_unused_for_sixty_days_but_not_revoked(full):
    last_use = full.group_by("org", "api_key").agg(pl.col("occurred_at").max().alias("last"))
    silent = last_use.filter(pl.col("last") < END - timedelta(days=60))
    keys = {k.api_key: k for k in demo_catalog().keys}
    not_revoked = [k for k in silent["api_key"] if keys[k].revoked_days_ago is None]
    assert not_revoked == ["key_evergreen_sbx_2"]
    # the rotated key is silent too, and revoked
    assert set(silent["api_key"]) == {"key_evergreen_sbx_2", "key_fjord_ts_prod_1"}
    assert keys["key_fjord_ts_prod_1"].revoked_days_ago is not None


def test_orgs_projects_and_keys(full):
    orgs = full["org"].unique().sort().to_list()
    assert orgs == ["acme-insurance", "borealis-health", "cobalt-lending", "delta-payroll",
                    "evergreen-benefits", "fjord-screening"]
    acme = full.filter(pl.col("org") == "acme-insurance")
    envs = acme.group_by("project").agg(pl.col("environment").mode().first())
    assert sorted(envs.rows()) == [("production-underwriting", "production"),
                                   ("sandbox-workforce-review", "sandbox")]
    per_org = full.group_by("org").agg(pl.col("project").n_unique())
    assert per_org["project"].is_between(1, 4).all()
    per_project = full.group_by("org", "project").agg(pl.col("api_key").n_unique())
    assert per_project["api_key"].is_between(1, 4).all()
    workloads = set(full["workload"].unique())
    assert {"underwriting", "workforce-review", "finance-package", "compliance-package",
            "bulk-export"} <= workloads
    assert len(workloads) >= 7
    # webhooks: acme sends them (its terms bill them); some orgs send none
    hooks = set(full.filter(pl.col("meter") == "webhook_delivery")["org"].unique())
    assert "acme-insurance" in hooks and len(hooks) < 6


def test_org_count_option():
    two = generate_events(orgs=2, days=20, end=END)
    assert two["org"].unique().sort().to_list() == ["acme-insurance", "borealis-health"]
    eight = generate_events(orgs=8, days=20, end=END)
    assert eight["org"].n_unique() == 8
    assert {"demo-org-07", "demo-org-08"} <= set(eight["org"])


@pytest.mark.parametrize("target", [20_000, 150_000])
def test_events_option_scales_the_volume(target):
    f = generate_events(days=120, end=END, events=target)
    assert abs(f.height - target) <= 0.03 * target


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"days": 0}, "days"), ({"orgs": -1}, "orgs"), ({"events": 0}, "events"), ({"seed": -3}, "seed"),
     ({"end": datetime(2026, 1, 1)}, "end")],  # noqa: DTZ001 - a naive end is the error under test
)
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_events(**kwargs)


def test_report_spike_days_are_weekdays_of_the_previous_period():
    assert report_spike_days(date(2026, 11, 18)) == [date(2026, 10, 12), date(2026, 10, 13),
                                                     date(2026, 10, 14)]  # the 10th is a Saturday
    assert report_spike_days(date(2026, 11, 18), days=20) == []


# --- the pricing stories (rate card pricing/default.toml) ------------------------------


def _billable(frame: pl.DataFrame, org: str, period: str) -> dict:
    """{(meter, environment): Decimal quantity} of billable-eligible usage, from the raw events."""
    q = (
        frame.filter(
            pl.col("org") == org, pl.col("occurred_at").dt.strftime("%Y-%m") == period,
            pl.col("status") == "success",
            (pl.col("meter") != "webhook_delivery") | (pl.col("attempt") == 1),
        )
        .group_by("meter", "environment").agg(pl.col("quantity").cast(pl.Int64).sum())
    )
    return {(m, e): Decimal(v) for m, e, v in q.iter_rows()}


def test_borealis_stays_under_its_minimum_commit_and_acme_pays_for_webhooks(full):
    card = parse_rate_card(DEFAULT_RATE_CARD.read_text())
    assert card.terms("borealis-health").minimum_commit == Decimal("5000.00")
    closed = [shift_period(period_of(END), -k) for k in range(1, 13)]
    trued_up = 0
    for period in closed:
        inv = price_quantities(_billable(full, "borealis-health", period), card, "borealis-health")
        subtotal = sum(ln.amount_cents for ln in inv.lines if ln.meter != TRUE_UP)
        assert 150_000 < subtotal  # real usage, not an empty org
        if any(ln.meter == TRUE_UP for ln in inv.lines):
            trued_up += 1
            assert inv.total_cents == 500_000
    assert trued_up >= 10
    acme = price_quantities(_billable(full, "acme-insurance", closed[0]), card, "acme-insurance")
    assert acme.line("webhook_delivery", "production").amount_cents > 0


# --- the `demo` command on SQLite and PostgreSQL --------------------------------------

SMALL = ["--orgs", "6", "--days", "100", "--seed", "11", "--events", "6000", "--end", "2026-11-18T15:30:00Z"]


def _run(engine, argv, capsys) -> tuple[int, str]:
    args = build_parser().parse_args(["demo", *argv])
    code = args.func(args, engine)
    return code, capsys.readouterr().out


def _count(conn, table, *where) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


def test_demo_command_fills_the_store_and_if_empty_is_then_a_no_op(engine, capsys):
    expected = generate_events(orgs=6, days=100, seed=11, end=END, events=6000)
    code, out = _run(engine, ["--if-empty", *SMALL], capsys)
    assert code == 0
    assert f"generated {expected.height:,} events" in out
    assert "rejected 0" in out
    with engine.connect() as conn:
        assert _count(conn, usage_events) == expected.height
        rolled = conn.execute(sa.select(sa.func.sum(usage_daily.c.events))).scalar_one()
        assert rolled == expected.height
        # billable lookups per org: the store agrees with the frame
        stored = dict(conn.execute(
            sa.select(usage_daily.c.org, sa.func.sum(usage_daily.c.quantity_micros))
            .where(usage_daily.c.meter == "lookup", usage_daily.c.eligible.is_(True))
            .group_by(usage_daily.c.org)
        ).all())
        frame_lookups = dict(expected.filter(pl.col("meter") == "lookup", pl.col("status") == "success")
                             .group_by("org").len().iter_rows())
        assert {o: v // 1_000_000 for o, v in stored.items()} == frame_lookups
        names = dict(conn.execute(sa.select(organizations.c.org, organizations.c.name)).all())
        assert names["acme-insurance"] == "Acme Insurance" and len(names) == 6
        assert _count(conn, rate_cards) == 1
        keys = {r.api_key: r for r in conn.execute(sa.select(api_keys)).all()}
        assert keys["key_fjord_ts_prod_1"].revoked_at is not None
        assert sum(k.revoked_at is not None for k in keys.values()) == 1
        assert keys["key_cobalt_lo_prod_4"].last_used_at is None  # issued, never used
        silent = keys["key_evergreen_sbx_2"]
        assert silent.revoked_at is None
        assert silent.last_used_at.replace(tzinfo=UTC) < END - timedelta(days=60)
        assert keys["key_acme_wr_sbx_1"].environment == "sandbox"  # as issued, though used in production
        # history arrived on time; only the late delivery restates the last closed period
        late = expected.filter(pl.col("org") == LATE_ORG,
                               pl.col("occurred_at").dt.date() == date(2026, 10, 31)).height
        rows = conn.execute(sa.select(restatements.c.org, restatements.c.period, restatements.c.events)).all()
        assert late > 0
        assert [tuple(r) for r in rows] == [(LATE_ORG, "2026-10", late)]
        runs = _count(conn, ingest_runs)

    code, out = _run(engine, ["--if-empty", *SMALL], capsys)
    assert code == 0 and "nothing done" in out
    with engine.connect() as conn:
        assert _count(conn, ingest_runs) == runs
        assert _count(conn, usage_events) == expected.height

    # without --if-empty a re-run is idempotent: everything is a duplicate, the card is kept
    code, out = _run(engine, SMALL, capsys)
    assert code == 0
    assert f"accepted 0, duplicates {expected.height:,}" in out
    with engine.connect() as conn:
        assert _count(conn, usage_events) == expected.height
        assert _count(conn, rate_cards) == 1


def test_demo_command_rejects_bad_options(engine, capsys):
    args = build_parser().parse_args(["demo", "--days", "0"])
    assert args.func(args, engine) == 2
    assert "days" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--end", "2026-11-18T15:30:00"])
    assert args.func(args, engine) == 2
    assert "--end" in capsys.readouterr().err
    with engine.connect() as conn:
        assert _count(conn, usage_events) == 0
