"""Realistic, deterministic demo usage: the generator and the `demo` command.

Owns the demo catalog (orgs, projects, API keys and the traffic streams they send) and
``generate_events``, which turns it into an event frame in the DOMAIN.md "Usage events"
schema. Volume is drawn per (stream, day) from a Poisson law whose rate carries weekly
seasonality, a year-end dip, per-org growth, onboarding ramps, key rotation and the
incidents the analytics pages should find: a report-heavy spike, an outage day with failed
calls, webhook retries, a sandbox key used against production and a key silent for 60+ days.
Everything per event is vectorised (numpy + Polars); loops run per org or per stream only.

The `demo` command ingests the frame through ``metering.ingest.ingest_frame``, stores the
shipped rate card when none is stored, and writes the demo-only metadata (display names,
key issue dates, a revoked key, an issued-but-unused key) through ``queries.seed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from metering.domain import (
    API_KEY,
    CHANNEL,
    ENVIRONMENT,
    METER,
    ORG,
    PROJECT,
    STATUS,
    WEBHOOK_METER,
    WORKLOAD,
)

# event-file columns (DOMAIN.md "Usage events") not already named in metering.domain
EVENT_ID = "event_id"
OCCURRED_AT = "occurred_at"
QUANTITY = "quantity"
ATTEMPT = "attempt"
EVENT_COLUMNS = (
    EVENT_ID, OCCURRED_AT, ORG, PROJECT, ENVIRONMENT, API_KEY, METER, WORKLOAD, CHANNEL,
    QUANTITY, STATUS, ATTEMPT,
)

DEFAULT_ORGS = 6
DEFAULT_DAYS = 396  # 13 months up to today: 12 closed periods and the open one
DEFAULT_SEED = 7
DEFAULT_RATE_CARD = Path(__file__).resolve().parent.parent / "pricing" / "default.toml"
INGEST_CHUNK_EVENTS = 250_000

# the report-heavy spike: this org's finance-package report jobs run SPIKE_FACTOR times the
# usual volume on SPIKE_DAYS weekdays from the 10th of the last closed period
SPIKE_ORG = "delta-payroll"
SPIKE_WORKLOAD = "finance-package"
SPIKE_FACTOR = 15.0
SPIKE_DAYS = 3
# the outage: a share of this org's API calls fail on one day
INCIDENT_ORG = "cobalt-lending"
INCIDENT_DAYS_AGO = 33
INCIDENT_FAIL_RATE = 0.25
# webhook redeliveries: P(attempt >= 2) and P(attempt = 3)
WEBHOOK_RETRY_P2 = 0.055
WEBHOOK_RETRY_P3 = 0.015
# records per export job, log-uniform
EXPORT_RECORDS_MIN = 200
EXPORT_RECORDS_MAX = 20_000

_WEEKEND_FACTOR = {"api": 0.22, "delivery": 0.22, "operator": 0.05}
# relative traffic per UTC hour (customers are mostly in the Americas)
_HOURLY = {
    "api": (2, 1.5, 1, 0.8, 0.8, 0.8, 1, 1.3, 2, 3, 4, 5, 7, 9, 10, 10, 10, 10, 9, 8, 7, 5, 4, 3),
    "operator": (0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1, 2, 4,
                 7, 9, 10, 10, 10, 9, 8, 6, 3, 1, 0.5, 0.3),
}
_PROFILE_OF_CHANNEL = {"api": 0, "delivery": 0, "operator": 1}
_PROFILES = ("api", "operator")


@dataclass(frozen=True)
class DemoOrg:
    org: str
    name: str
    growth: float  # traffic today / traffic one year ago
    onboarded_days_ago: int | None = None  # first day of traffic; None = before the window
    webhooks: bool = True  # sends webhook deliveries (billing them is a rate-card term)


@dataclass(frozen=True)
class DemoKey:
    """An API key as issued: for one project and one environment."""

    org: str
    project: str
    environment: str
    api_key: str
    created_days_ago: int
    active_from_days_ago: int | None = None  # first day with traffic (None: created day)
    active_until_days_ago: int = 0  # last day with traffic (0: today)
    revoked_days_ago: int | None = None
    used: bool = True  # False: issued, never called


@dataclass(frozen=True)
class Stream:
    """One kind of traffic: the rate is events per weekday at today's volume (default size)."""

    org: str
    project: str
    environment: str
    api_key: str
    meter: str
    workload: str
    channel: str
    rate: float
    fail_rate: float
    from_days_ago: int | None = None  # extra window inside the key's
    until_days_ago: int = 0


@dataclass(frozen=True)
class DemoCatalog:
    orgs: tuple[DemoOrg, ...]
    keys: tuple[DemoKey, ...]
    streams: tuple[Stream, ...] = field(repr=False)

    def org_names(self) -> dict[str, str]:
        return {o.org: o.name for o in self.orgs}


def generate_events(
    *,
    orgs: int = DEFAULT_ORGS,
    days: int = DEFAULT_DAYS,
    seed: int = DEFAULT_SEED,
    end: datetime | None = None,
    events: int | None = None,
) -> pl.DataFrame:
    """Demo usage events for ``days`` days up to ``end`` (default: now, UTC), sorted by time.

    Deterministic for a given (orgs, days, seed, end, events). ``events`` rescales the volume to
    about that many events (Poisson noise aside); by default the size is the catalog's native
    rate (about 420k events for 6 orgs over 396 days). Columns: ``EVENT_COLUMNS`` with
    ``occurred_at`` a UTC Datetime(us), ``quantity`` a decimal string, ``attempt`` Int32.
    """
    _check_positive(orgs=orgs, days=days, seed_nonneg=seed, events=events)
    end = _utc(end)
    catalog = demo_catalog(orgs=orgs, seed=seed)
    rng = np.random.default_rng(seed)
    streams = catalog.streams
    lam = _daily_rates(catalog, days, end, rng)
    if events is not None:
        lam *= events / lam.sum()
    counts = rng.poisson(lam)
    return _expand(streams, counts, days, end, seed, rng)


def demo_catalog(*, orgs: int = DEFAULT_ORGS, seed: int = DEFAULT_SEED) -> DemoCatalog:
    """The demo orgs, their keys and traffic streams (the first ``orgs`` of the named six, then
    generated ``demo-org-NN`` orgs whose profile is drawn from ``seed``)."""
    _check_positive(orgs=orgs)
    named = _named_catalog()
    picked = named[:orgs]
    out_orgs = [o for o, _k, _s in picked]
    out_keys = [k for _o, ks, _s in picked for k in ks]
    out_streams = [s for _o, _k, ss in picked for s in ss]
    for i in range(len(named) + 1, orgs + 1):
        o, ks, ss = _generated_org(i, seed)
        out_orgs.append(o)
        out_keys.extend(ks)
        out_streams.extend(ss)
    return DemoCatalog(tuple(out_orgs), tuple(out_keys), tuple(out_streams))


def report_spike_days(end: datetime | date, days: int = DEFAULT_DAYS) -> list[date]:
    """The spike's days: the first SPIKE_DAYS weekdays from the 10th of the period before
    ``end``'s (empty when that falls outside the window)."""
    end_day = end.astimezone(UTC).date() if isinstance(end, datetime) else end
    first_open = end_day.replace(day=1)
    prev = (first_open - timedelta(days=1)).replace(day=10)
    out: list[date] = []
    d = prev
    while len(out) < SPIKE_DAYS:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    start = end_day - timedelta(days=days - 1)
    return [d for d in out if start <= d <= end_day]


# ---------------------------------------------------------------------------------------
# the catalog


def _mix(org, project, env, key, workload, base, *, weight=1.0, webhooks=True, reviews=0.0,
         expanded=0.15, fail=0.015, window=(None, 0)):
    """The streams of a lookup-driven workload: lookups, expanded history, webhooks, reviews."""
    rate = base * weight
    out = [
        Stream(org, project, env, key, "lookup", workload, "api", rate, fail, *window),
        Stream(org, project, env, key, "expanded_history", workload, "api", rate * expanded, fail * 1.3,
               *window),
    ]
    if webhooks:
        out.append(Stream(org, project, env, key, WEBHOOK_METER, workload, "delivery", rate * 0.6, 0.04,
                          *window))
    if reviews:
        out.append(Stream(org, project, env, key, "assisted_review", workload, "operator", rate * reviews,
                          0.01, *window))
    return out


def _package(org, project, env, key, workload, reports, exports=0.0, *, weight=1.0, window=(None, 0)):
    """The streams of a packaging workload: report jobs, and export jobs of many records."""
    out = [Stream(org, project, env, key, "report_job", workload, "api", reports * weight, 0.03, *window)]
    if exports:
        out.append(Stream(org, project, env, key, "export_records", workload, "api", exports * weight, 0.02,
                          *window))
    return out


def _named_catalog():
    P, S = "production", "sandbox"
    cat = []

    # acme-insurance: the largest, fast-growing, webhooks billed by its terms (rate card)
    org = DemoOrg("acme-insurance", "Acme Insurance", growth=1.9)
    uw, wr = "production-underwriting", "sandbox-workforce-review"
    keys = [
        DemoKey(org.org, uw, P, "key_acme_uw_prod_1", created_days_ago=540),
        DemoKey(org.org, uw, P, "key_acme_uw_prod_2", created_days_ago=214, active_from_days_ago=210),
        DemoKey(org.org, wr, S, "key_acme_wr_sbx_1", created_days_ago=480),
    ]
    streams = (
        _mix(org.org, uw, P, "key_acme_uw_prod_1", "underwriting", 205, weight=1.0)
        + _mix(org.org, uw, P, "key_acme_uw_prod_2", "underwriting", 205, weight=0.55)
        + _package(org.org, uw, P, "key_acme_uw_prod_1", "finance-package", 5, 1.0)
        + _mix(org.org, wr, S, "key_acme_wr_sbx_1", "workforce-review", 70, reviews=0.05)
        # the sandbox key used against production for the last 40 days
        + [Stream(org.org, wr, P, "key_acme_wr_sbx_1", "lookup", "workforce-review", "api", 14, 0.02,
                  from_days_ago=40)]
    )
    cat.append((org, keys, streams))

    # borealis-health: steady, small: stays under its minimum commit most months
    org = DemoOrg("borealis-health", "Borealis Health", growth=1.15)
    cc, sb = "clinical-credentialing", "borealis-sandbox"
    keys = [
        DemoKey(org.org, cc, P, "key_borealis_cc_prod_1", created_days_ago=700),
        DemoKey(org.org, sb, S, "key_borealis_sbx_1", created_days_ago=700),
    ]
    streams = (
        _mix(org.org, cc, P, "key_borealis_cc_prod_1", "workforce-review", 120, reviews=0.04)
        + _package(org.org, cc, P, "key_borealis_cc_prod_1", "compliance-package", 2.5)
        + _mix(org.org, sb, S, "key_borealis_sbx_1", "workforce-review", 20, webhooks=False)
    )
    cat.append((org, keys, streams))

    # cobalt-lending: lending underwriting, a bulk-export project, an outage day
    org = DemoOrg("cobalt-lending", "Cobalt Lending", growth=1.6)
    lo, bx, cs = "loan-origination", "bulk-exports", "cobalt-sandbox"
    keys = [
        DemoKey(org.org, lo, P, "key_cobalt_lo_prod_1", created_days_ago=620),
        DemoKey(org.org, lo, P, "key_cobalt_lo_prod_2", created_days_ago=620),
        DemoKey(org.org, lo, P, "key_cobalt_lo_prod_3", created_days_ago=300, active_from_days_ago=290),
        DemoKey(org.org, lo, P, "key_cobalt_lo_prod_4", created_days_ago=12, used=False),
        DemoKey(org.org, bx, P, "key_cobalt_export_1", created_days_ago=600),
        DemoKey(org.org, cs, S, "key_cobalt_sbx_1", created_days_ago=640),
    ]
    streams = (
        _mix(org.org, lo, P, "key_cobalt_lo_prod_1", "underwriting", 160, weight=0.5)
        + _mix(org.org, lo, P, "key_cobalt_lo_prod_2", "underwriting", 160, weight=0.3)
        + _mix(org.org, lo, P, "key_cobalt_lo_prod_3", "underwriting", 160, weight=0.2)
        + _package(org.org, lo, P, "key_cobalt_lo_prod_1", "finance-package", 3, 0.5)
        + _package(org.org, bx, P, "key_cobalt_export_1", "bulk-export", 0.4, 2.5)
        + _mix(org.org, cs, S, "key_cobalt_sbx_1", "underwriting", 30, webhooks=False)
    )
    cat.append((org, keys, streams))

    # delta-payroll: income verification; the report-heavy spike (finance packages)
    org = DemoOrg("delta-payroll", "Delta Payroll", growth=1.3, webhooks=False)
    pv, st = "payroll-verification", "delta-staging"
    keys = [
        DemoKey(org.org, pv, P, "key_delta_pv_prod_1", created_days_ago=800),
        DemoKey(org.org, pv, P, "key_delta_pv_prod_2", created_days_ago=800),
        DemoKey(org.org, st, S, "key_delta_stg_1", created_days_ago=800),
    ]
    streams = (
        _mix(org.org, pv, P, "key_delta_pv_prod_1", "income-verification", 130, weight=0.7, webhooks=False)
        + _mix(org.org, pv, P, "key_delta_pv_prod_2", "income-verification", 130, weight=0.3, webhooks=False)
        + _package(org.org, pv, P, "key_delta_pv_prod_2", SPIKE_WORKLOAD, 4, 0.8)
        + _mix(org.org, st, S, "key_delta_stg_1", "income-verification", 18, webhooks=False)
    )
    cat.append((org, keys, streams))

    # evergreen-benefits: benefits eligibility; a sandbox key nobody has used for 75 days
    org = DemoOrg("evergreen-benefits", "Evergreen Benefits", growth=1.25, webhooks=False)
    be, es = "benefits-enrollment", "evergreen-sandbox"
    keys = [
        DemoKey(org.org, be, P, "key_evergreen_be_prod_1", created_days_ago=760),
        DemoKey(org.org, es, S, "key_evergreen_sbx_1", created_days_ago=760),
        DemoKey(org.org, es, S, "key_evergreen_sbx_2", created_days_ago=420, active_from_days_ago=415,
                active_until_days_ago=75),
    ]
    streams = (
        _mix(org.org, be, P, "key_evergreen_be_prod_1", "benefits-eligibility", 115, webhooks=False)
        + _package(org.org, be, P, "key_evergreen_be_prod_1", "compliance-package", 1.5)
        + _mix(org.org, es, S, "key_evergreen_sbx_1", "benefits-eligibility", 14, webhooks=False)
        + _mix(org.org, es, S, "key_evergreen_sbx_2", "benefits-eligibility", 10, webhooks=False)
    )
    cat.append((org, keys, streams))

    # fjord-screening: onboarded seven months ago; rotated its first production key
    org = DemoOrg("fjord-screening", "Fjord Screening", growth=1.0, onboarded_days_ago=210)
    ts, ws, fs = "tenant-screening", "workforce-screening", "fjord-sandbox"
    keys = [
        DemoKey(org.org, ts, P, "key_fjord_ts_prod_1", created_days_ago=212, active_until_days_ago=101,
                revoked_days_ago=100),
        DemoKey(org.org, ts, P, "key_fjord_ts_prod_2", created_days_ago=104, active_from_days_ago=100),
        DemoKey(org.org, ws, P, "key_fjord_ws_prod_1", created_days_ago=150, active_from_days_ago=140),
        DemoKey(org.org, fs, S, "key_fjord_sbx_1", created_days_ago=225),
    ]
    streams = (
        _mix(org.org, ts, P, "key_fjord_ts_prod_1", "tenant-screening", 150)
        + _mix(org.org, ts, P, "key_fjord_ts_prod_2", "tenant-screening", 150)
        + _package(org.org, ts, P, "key_fjord_ts_prod_2", "compliance-package", 1, window=(100, 0))
        + _mix(org.org, ws, P, "key_fjord_ws_prod_1", "workforce-review", 50, reviews=0.08)
        + _mix(org.org, fs, S, "key_fjord_sbx_1", "tenant-screening", 25, webhooks=False)
    )
    cat.append((org, keys, streams))
    return cat


def _generated_org(i: int, seed: int):
    """Org number ``i`` beyond the named six: a production and a sandbox project."""
    rng = np.random.default_rng([seed, i])
    slug = f"demo-org-{i:02d}"
    short = f"o{i:02d}"
    org = DemoOrg(slug, f"Demo Org {i:02d}", growth=float(rng.uniform(1.0, 2.0)))
    prod, sbx = "production-api", "sandbox"
    n_keys = int(rng.integers(1, 4))
    base = float(rng.lognormal(math.log(120), 0.5))
    workloads = ["underwriting", "workforce-review", "tenant-screening", "income-verification"]
    workload = str(rng.choice(workloads))
    keys = [DemoKey(slug, prod, "production", f"key_{short}_prod_{k}", created_days_ago=500)
            for k in range(1, n_keys + 1)]
    keys.append(DemoKey(slug, sbx, "sandbox", f"key_{short}_sbx_1", created_days_ago=500))
    streams = []
    for k in keys[:-1]:
        streams += _mix(slug, prod, "production", k.api_key, workload, base, weight=1 / n_keys,
                        reviews=0.03)
    streams += _package(slug, prod, "production", keys[0].api_key, "compliance-package", 1.5, 0.5)
    streams += _mix(slug, sbx, "sandbox", keys[-1].api_key, workload, base * 0.12, webhooks=False)
    return org, keys, streams


# ---------------------------------------------------------------------------------------
# rates and expansion


def _daily_rates(catalog: DemoCatalog, days: int, end: datetime, rng: np.random.Generator) -> np.ndarray:
    """Expected events per (stream, day): a float matrix (streams x days)."""
    streams = catalog.streams
    end_day = end.date()
    day0 = np.datetime64(end_day - timedelta(days=days - 1), "D")
    dates = day0 + np.arange(days)
    days_ago = (days - 1 - np.arange(days)).astype(np.float64)
    dow = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weekend = dow >= 5
    months = dates.astype("datetime64[M]")
    dom = (dates - months.astype("datetime64[D]")).astype(np.int64) + 1
    month_no = months.astype(np.int64) % 12 + 1
    month_len = ((months + 1).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(np.int64)
    holiday = np.where(((month_no == 12) & (dom >= 24)) | ((month_no == 1) & (dom == 1)), 0.45, 1.0)
    month_end = dom > month_len - 3

    orgs = {o.org: o for o in catalog.orgs}
    org_index = {o: n for n, o in enumerate(orgs)}
    noise = rng.lognormal(0.0, 0.12, size=(len(orgs), days))
    org_factor = np.empty((len(orgs), days))
    for n, o in enumerate(orgs.values()):
        f = o.growth ** (-days_ago / 365.0)
        if o.onboarded_days_ago is not None:
            since = o.onboarded_days_ago - days_ago
            f = f * np.where(since < 0, 0.0, np.minimum(1.0, 0.25 + 0.75 * since / 60.0))
        org_factor[n] = f * holiday * noise[n]

    keys = {(k.org, k.api_key): k for k in catalog.keys}
    spike = set(report_spike_days(end_day, days))
    spike_mask = np.array([d in spike for d in dates.astype(object)], dtype=bool)
    lam = np.empty((len(streams), days))
    for n, s in enumerate(streams):
        k = keys[(s.org, s.api_key)]
        first = k.active_from_days_ago if k.active_from_days_ago is not None else k.created_days_ago
        if s.from_days_ago is not None:
            first = min(first, s.from_days_ago)
        last = max(k.active_until_days_ago, s.until_days_ago)
        active = (days_ago <= first) & (days_ago >= last) & k.used
        wk = np.where(weekend, _WEEKEND_FACTOR[s.channel], 1.0)
        row = s.rate * org_factor[org_index[s.org]] * wk * active
        if s.meter == "report_job" and s.workload == "finance-package":
            row = row * np.where(month_end, 2.0, 1.0)
            if s.org == SPIKE_ORG:
                row = row * np.where(spike_mask, SPIKE_FACTOR, 1.0)
        lam[n] = row
    # the open day only up to `end`
    tod = (end - datetime.combine(end_day, datetime.min.time(), UTC)) / timedelta(hours=1)
    for n, s in enumerate(streams):
        lam[n, -1] *= _cdf(_PROFILES[_PROFILE_OF_CHANNEL[s.channel]], tod)
    return lam


def _fail_rates(streams, days: int) -> np.ndarray:
    fail = np.repeat(np.array([s.fail_rate for s in streams])[:, None], days, axis=1)
    d = days - 1 - INCIDENT_DAYS_AGO
    if 0 <= d < days:
        for n, s in enumerate(streams):
            if s.org == INCIDENT_ORG and s.channel == "api" and s.environment == "production":
                fail[n, d] = INCIDENT_FAIL_RATE
    return fail


def _cdf(profile: str, hours: float) -> float:
    w = np.asarray(_HOURLY[profile], dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(w)]) / w.sum()
    h = min(int(hours), 23)
    return float(c[h] + (c[h + 1] - c[h]) * min(1.0, hours - h))


def _expand(streams, counts: np.ndarray, days: int, end: datetime, seed: int,
            rng: np.random.Generator) -> pl.DataFrame:
    """One row per event: timestamps by hourly profile, status, attempts, quantities."""
    n_streams = len(streams)
    flat = counts.ravel()
    n = int(flat.sum())
    cell = np.repeat(np.arange(n_streams * days, dtype=np.int64), flat)
    s_idx = cell // days
    d_idx = cell - s_idx * days
    del cell

    end_day = end.date()
    day0_us = int(datetime.combine(end_day - timedelta(days=days - 1), datetime.min.time(), UTC)
                  .timestamp()) * 1_000_000
    end_us = int(end.timestamp() * 1_000_000)
    tod_hours = (end_us - (day0_us + (days - 1) * 86_400_000_000)) / 3.6e9

    profile = np.array([_PROFILE_OF_CHANNEL[s.channel] for s in streams], dtype=np.int8)[s_idx]
    u = rng.random(n)
    tod_us = np.empty(n, dtype=np.int64)
    last = d_idx == days - 1
    for p, name in enumerate(_PROFILES):
        w = np.asarray(_HOURLY[name], dtype=np.float64)
        c = np.concatenate([[0.0], np.cumsum(w)]) / w.sum()
        m = profile == p
        up = u[m] * np.where(last[m], _cdf(name, tod_hours), 1.0)
        h = np.clip(np.searchsorted(c, up, side="right") - 1, 0, 23)
        frac = (up - c[h]) / (c[h + 1] - c[h])
        tod_us[m] = ((h + frac) * 3.6e9).astype(np.int64)
    del u, profile
    occurred = np.minimum(day0_us + d_idx * 86_400_000_000 + np.clip(tod_us, 0, 86_399_999_999), end_us)
    del tod_us

    failed = rng.random(n) < _fail_rates(streams, days)[s_idx, d_idx]
    del d_idx
    is_webhook = np.array([s.meter == WEBHOOK_METER for s in streams])[s_idx]
    r = rng.random(n)
    attempt = (1 + ((r < WEBHOOK_RETRY_P2) & is_webhook) + ((r < WEBHOOK_RETRY_P3) & is_webhook)).astype(
        np.int32)
    del r, is_webhook
    quantity = np.ones(n, dtype=np.int64)
    is_export = np.array([s.meter == "export_records" for s in streams])[s_idx]
    k = int(is_export.sum())
    quantity[is_export] = np.exp(
        rng.uniform(math.log(EXPORT_RECORDS_MIN), math.log(EXPORT_RECORDS_MAX), k)
    ).round().astype(np.int64)
    del is_export

    order = np.argsort(occurred, kind="stable")
    s_idx = s_idx[order]
    catalog_df = pl.DataFrame(
        {
            ORG: [s.org for s in streams],
            PROJECT: [s.project for s in streams],
            ENVIRONMENT: [s.environment for s in streams],
            API_KEY: [s.api_key for s in streams],
            METER: [s.meter for s in streams],
            WORKLOAD: [s.workload for s in streams],
            CHANNEL: [s.channel for s in streams],
        }
    )
    width = max(8, len(str(n)))
    frame = catalog_df.select(pl.all().gather(pl.Series(s_idx, dtype=pl.Int64)))
    del s_idx
    return frame.select(
        pl.concat_str([pl.lit(f"demo-{seed}-"), pl.int_range(n, dtype=pl.Int64).cast(pl.String)
                       .str.zfill(width)]).alias(EVENT_ID),
        pl.Series(OCCURRED_AT, occurred[order]).cast(pl.Datetime("us", "UTC")),
        *[pl.col(c) for c in (ORG, PROJECT, ENVIRONMENT, API_KEY, METER, WORKLOAD, CHANNEL)],
        pl.Series(QUANTITY, quantity[order]).cast(pl.String),
        pl.when(pl.Series(failed[order])).then(pl.lit("failed")).otherwise(pl.lit("success")).alias(STATUS),
        pl.Series(ATTEMPT, attempt[order]),
    )


def _utc(end: datetime | None) -> datetime:
    if end is None:
        return datetime.now(UTC)
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware (UTC), got a naive datetime")
    return end.astimezone(UTC)


def _check_positive(*, seed_nonneg: int | None = None, **values) -> None:
    for name, v in values.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if seed_nonneg is not None and (not isinstance(seed_nonneg, int) or seed_nonneg < 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed_nonneg!r}")


# ---------------------------------------------------------------------------------------
# the `demo` command


@dataclass(frozen=True)
class DemoLoad:
    """What ``load_demo`` did."""

    generated: int
    accepted: int
    duplicates: int
    rejected: int
    runs: int
    late_events: int
    rate_card_loaded: bool
    orgs: int
    projects: int
    keys: int
    generate_seconds: float
    ingest_seconds: float


def load_demo(
    engine,
    *,
    orgs: int = DEFAULT_ORGS,
    days: int = DEFAULT_DAYS,
    seed: int = DEFAULT_SEED,
    end: datetime | None = None,
    events: int | None = None,
    rate_card: Path = DEFAULT_RATE_CARD,
    chunk_events: int = INGEST_CHUNK_EVENTS,
) -> DemoLoad:
    """Generate demo events, ingest them, store the default rate card if no card applies to the
    open period, and write the demo metadata (names, key issue dates, revoked and unused keys).

    Events arrive the way a live platform sends them: one ingest run per period (chunked at
    ``chunk_events``), each stamped with a time inside its own period, so history is not
    mistaken for late data; only LATE_ORG's events of the last day of the last closed period
    arrive after it closed (at ``end``), which records one genuine restatement.
    """
    from metering.ingest import ingest_frame
    from metering.periods import period_of
    from metering.pricing import card_for_period, load_rate_card
    from queries.engine import upgrade

    end = _utc(end)
    upgrade(engine)
    t0 = time.perf_counter()
    frame = generate_events(orgs=orgs, days=days, seed=seed, end=end, events=events)
    catalog = demo_catalog(orgs=orgs, seed=seed)
    t1 = time.perf_counter()

    late = _late_mask(frame, end)
    on_time, late_frame = frame.filter(~late), frame.filter(late)
    del frame
    totals = [0, 0, 0]
    runs = 0
    source = f"demo seed={seed}"
    periods = on_time.select(pl.col(OCCURRED_AT).dt.strftime("%Y-%m").alias("p"))["p"]
    for period, part in on_time.with_columns(_period=periods).partition_by(
        "_period", as_dict=True, maintain_order=True
    ).items():
        part = part.drop("_period")
        for offset in range(0, part.height, chunk_events):
            chunk = part.slice(offset, chunk_events)
            arrived = min(chunk[OCCURRED_AT].max(), end)
            res = ingest_frame(engine, chunk, f"{source} {period[0]}", now=arrived, run_by="demo")
            totals = [a + b for a, b in zip(totals, (res.accepted, res.duplicates, res.rejected),
                                             strict=True)]
            runs += 1
    if late_frame.height:
        res = ingest_frame(engine, late_frame, f"{source} late delivery", now=end, run_by="demo")
        totals = [a + b for a, b in zip(totals, (res.accepted, res.duplicates, res.rejected), strict=True)]
        runs += 1
    t2 = time.perf_counter()

    card_loaded = False
    if card_for_period(engine, period_of(end)) is None:
        load_rate_card(engine, rate_card, loaded_by="demo")
        card_loaded = True
    n_orgs, n_projects, n_keys = _seed_metadata(engine, catalog, end)
    return DemoLoad(
        generated=on_time.height + late_frame.height, accepted=totals[0], duplicates=totals[1],
        rejected=totals[2], runs=runs, late_events=late_frame.height, rate_card_loaded=card_loaded,
        orgs=n_orgs, projects=n_projects, keys=n_keys, generate_seconds=t1 - t0, ingest_seconds=t2 - t1,
    )


# LATE_ORG's events of the last day of the last closed period are delivered after it closed
LATE_ORG = "cobalt-lending"


def _late_mask(frame: pl.DataFrame, end: datetime) -> pl.Series:
    first_open = datetime(end.year, end.month, 1, tzinfo=UTC)
    last_closed_day = first_open - timedelta(days=1)
    return frame.select(
        (pl.col(ORG) == LATE_ORG)
        & (pl.col(OCCURRED_AT) >= last_closed_day) & (pl.col(OCCURRED_AT) < first_open)
    ).to_series()


def _seed_metadata(engine, catalog: DemoCatalog, end: datetime) -> tuple[int, int, int]:
    from queries.seed import IssuedKey, upsert_api_keys, upsert_orgs, upsert_projects

    def ago(days_ago: int) -> datetime:
        day = end.date() - timedelta(days=days_ago)  # issued at the start of the day (UTC)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    keys = [
        IssuedKey(k.org, k.api_key, k.project, k.environment, created_at=ago(k.created_days_ago),
                  revoked_at=ago(k.revoked_days_ago) if k.revoked_days_ago is not None else None)
        for k in catalog.keys
    ]
    project_created: dict[tuple[str, str], datetime] = {}
    org_created: dict[str, datetime] = {}
    for k in keys:
        pk = (k.org, k.project)
        project_created[pk] = min(project_created.get(pk, k.created_at), k.created_at)
        org_created[k.org] = min(org_created.get(k.org, k.created_at), k.created_at)
    n_orgs = upsert_orgs(engine, {o.org: (o.name, org_created[o.org]) for o in catalog.orgs})
    n_projects = upsert_projects(engine, project_created)
    n_keys = upsert_api_keys(engine, keys)
    return n_orgs, n_projects, n_keys


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="fill the database with realistic demo usage",
        description="Generate deterministic demo usage (13 months up to now by default), ingest it, "
        "store the default rate card if none applies, and write demo org/key metadata.",
    )
    p.add_argument("--orgs", type=int, default=DEFAULT_ORGS, help=f"number of orgs (default {DEFAULT_ORGS})")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS,
                   help=f"days of history up to --end (default {DEFAULT_DAYS}, 13 months)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("--events", type=int, default=None,
                   help="scale the volume to about this many events (default: ~420k for 6 orgs)")
    p.add_argument("--end", default=None,
                   help="last moment of history, RFC 3339 with offset (default: now)")
    p.add_argument("--if-empty", action="store_true",
                   help="do nothing when usage_events already has rows (used by `make run`)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args, engine, *, out=print) -> int:
    import sys

    from metering.access_cli import require_platform
    from queries.engine import upgrade

    require_platform(args)
    from queries.seed import usage_events_exist

    try:
        end = _parse_end(args.end)
        _check_positive(orgs=args.orgs, days=args.days, seed_nonneg=args.seed, events=args.events)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    upgrade(engine)
    if args.if_empty and usage_events_exist(engine):
        out("demo: usage_events already has rows; nothing done (--if-empty)")
        return 0
    t0 = time.perf_counter()
    r = load_demo(engine, orgs=args.orgs, days=args.days, seed=args.seed, end=end, events=args.events)
    out(f"demo: generated {r.generated:,} events for {r.orgs} orgs over {args.days} days "
        f"(seed {args.seed}) in {r.generate_seconds:.1f}s")
    out(f"demo: ingested in {r.runs} runs in {r.ingest_seconds:.1f}s: accepted {r.accepted:,}, "
        f"duplicates {r.duplicates:,}, rejected {r.rejected:,} ({r.late_events:,} delivered late)")
    out("demo: rate card " + (f"{DEFAULT_RATE_CARD.name} stored" if r.rate_card_loaded
                              else "already stored for the open period; left as is"))
    out(f"demo: metadata for {r.orgs} orgs, {r.projects} projects, {r.keys} api keys "
        f"(revoked and issued-unused keys included)")
    out(f"demo: done in {time.perf_counter() - t0:.1f}s")
    if r.rejected:
        print(f"error: {r.rejected} demo events were rejected; the generator breaks an ingestion rule",
              file=sys.stderr)
        return 1
    return 0


def _parse_end(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--end: not an RFC 3339 timestamp: {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"--end: needs an offset (e.g. Z or +00:00): {text!r}")
    return value.astimezone(UTC)
