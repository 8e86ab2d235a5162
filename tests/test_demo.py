"""Demo data: the generator's frame is valid, deterministic and carries every story the pages
need; the `demo` command fills SQLite and PostgreSQL, and `--if-empty` is then a no-op."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from metering.demo import demo_catalog, generate_events, report_spike_days
from metering.domain import CHANNELS, ENVIRONMENTS, METER_NAMES, SLUG_RE, STATUSES
from metering.periods import period_of, shift_period

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
