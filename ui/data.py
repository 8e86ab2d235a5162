"""Cached loads for the app. Functions take filter values (strings, dates), never frames.

Every cache has a ttl and max_entries. The engine is a cached resource. The heavy work is in
metering/ (the same functions the CLI calls); this module only caches it per filter value.

Isolation: caches are shared by every session, keyed by the org (never by "whatever the user
may see"), and every per-org loader is wrapped by ``_org_scoped``, which checks the org against
this run's principal BEFORE the cache is consulted, so a cached result of one user's org is
never served to a user outside that org. Each loader passes exactly ``[org]`` as the query
scope; ``visible_orgs`` is keyed by the principal's scope. The page models below are wrapped the
same way: the org check runs on every call, before any cached model is returned.

Which cache (the rule): ``st.cache_data`` pickles the result and every hit unpickles a fresh
copy (1-3 ms for an overview), which protects callers that mutate what they get.
``st.cache_resource`` returns the very same object to every session: no copy, no unpickle, so it
is only for results that nobody mutates. Here that is the BillingOverview (a frozen dataclass of
Polars frames: every Polars operation returns a new frame), the org's usage frame and the page
models (frozen dataclasses of str/int/tuple, ``pyarrow.Table`` and Vega-Lite dicts that
``ui.charts.show`` copies before Streamlit touches them). Pages must treat them as read-only:
never assign into a model, its dicts (the invoice model's document included) or a cached frame
in place. Results that callers may change (option lists, the raw invoice document, budget
evaluations) stay in ``st.cache_data``. ``clear()`` empties both kinds.

Sizing: a shared link is (org, period, compare, slice) and a page adds its own widget (lane
dimension, project). The load test's links span 6 orgs x 4 periods x 2 compare modes = 48
overview keys; MAX_OVERVIEWS keeps all of them. An overview is 0.2 MiB pickled for the demo's
largest org and grows with the org's rollup rows; a page model holds no reference to its overview
(only aggregated tables, a chart spec, strings), so an evicted overview is freed even while
models built from it stay cached. MAX_MODELS allows a few hundred slices per page; the invoice
model (document, CSV and JSON, ~150 KiB pickled; the others 2-13 KiB) is keyed by the overview
key only.
"""

from __future__ import annotations

import functools
import os
from datetime import date

import polars as pl
import streamlit as st

from metering.access import AccessDenied, Principal, Role
from metering.domain import DAY
from metering.forecast import history_start as projection_history_start
from metering.overview import BillingOverview, billing_overview
from metering.periods import period_bounds
from metering.pricing import card_for_period
from queries.engine import database_url, make_engine, scoped_engine
from queries.filters import known_orgs, org_dimension_values
from queries.usage import load_usage
from ui.auth import PRINCIPAL_KEY

TTL = 120
MAX_OVERVIEWS = 64  # (org, period, compare, today) keys: 6 orgs x 4 periods x 2 compares = 48 in the load test
MAX_MODELS = 256  # per page: overview keys x slices x page widget; a model is 2-13 KiB (invoice ~150 KiB)


def _require_org(org: str) -> None:
    p = st.session_state.get(PRINCIPAL_KEY)
    if not isinstance(p, Principal) or not isinstance(org, str) or not p.can(org):
        who = p.user_id if isinstance(p, Principal) else "nobody signed in"
        raise AccessDenied(f"{who} may not read org {str(org)[:63]!r}")


def _org_scoped(cached):
    """Check the org (first argument) against this run's principal, then call the cached loader."""
    @functools.wraps(cached)
    def checked(org: str, *args, **kwargs):
        _require_org(org)
        return cached(org, *args, **kwargs)

    checked.clear = cached.clear
    return checked


def statement_timeout_ms() -> int:
    """Per-statement limit for the app (``METERING_STATEMENT_TIMEOUT_MS``, default 15 s)."""
    raw = os.environ.get("METERING_STATEMENT_TIMEOUT_MS", "15000")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"METERING_STATEMENT_TIMEOUT_MS must be an integer of milliseconds, not {raw!r}") from None
    if not 1 <= value <= 3_600_000:
        raise ValueError(f"METERING_STATEMENT_TIMEOUT_MS must be between 1 and 3600000, not {value}")
    return value


@st.cache_resource
def engine():
    """The read engine: ``METERING_READ_DATABASE_URL`` (e.g. a metering_reader login), else the main URL."""
    return make_engine(database_url(purpose="read"), statement_timeout_ms=statement_timeout_ms())


@st.cache_resource
def write_engine():
    """The engine for budget and membership edits (``METERING_DATABASE_URL``, a metering_writer login)."""
    url = database_url(purpose="write")
    if url == database_url(purpose="read"):
        return engine()
    return make_engine(url, statement_timeout_ms=statement_timeout_ms())


def reader(orgs):
    """The read engine carrying the org scope (PostgreSQL row-level security reads it; None = every org)."""
    return scoped_engine(engine(), orgs)


def writer(orgs):
    """The write engine carrying the org scope of the edit."""
    return scoped_engine(write_engine(), orgs)


@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def visible_orgs(allowed: frozenset[str] | None) -> list[str]:
    return known_orgs(reader(allowed), allowed)


@_org_scoped
@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def org_options(org: str) -> dict:
    return org_dimension_values(reader([org]), org, [org])


def history_start(period: str, compare_period: str) -> date:
    """First day the overview needs: the comparison period or the forecast's backtest window."""
    return min(period_bounds(compare_period)[0], projection_history_start(period))


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_OVERVIEWS, show_spinner=False)
def org_usage(org: str, start: date, end: date) -> pl.DataFrame:
    return load_usage(reader([org]), [org], start, end)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_OVERVIEWS, show_spinner="Pricing the period…")
def overview(org: str, period: str, compare_period: str, today: date) -> BillingOverview:
    end = period_bounds(period)[1]
    usage = org_usage(org, history_start(period, compare_period), end)
    return billing_overview(usage, rate_card(period), org, period, compare_period, today,
                            previous_card=rate_card(compare_period))


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def rate_card(period: str):
    return card_for_period(engine(), period)


@_org_scoped
@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def freshness(org: str):
    from metering.freshness import data_freshness

    return data_freshness(reader([org]), [org])


@_org_scoped
@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def budget_evaluations(org: str, today: date):
    from metering.alerts import evaluate_alerts

    return evaluate_alerts(reader([org]), [org], today, org=org)


@_org_scoped
@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def api_keys(org: str) -> pl.DataFrame:
    from queries.catalog import load_api_keys

    return load_api_keys(reader([org]), [org])


@_org_scoped
@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def invoice_document(org: str, period: str, as_of_iso: str | None) -> dict:
    from datetime import datetime

    from metering.invoice import invoice_document as doc

    as_of = datetime.fromisoformat(as_of_iso) if as_of_iso else None
    return doc(reader([org]), org, period, as_of, orgs=[org])


# -- page models (display-ready results per filter key; see ui/models.py) ------------------------

@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def home_model(org: str, period: str, compare_period: str, today: date,
               projects: tuple[str, ...], environments: tuple[str, ...], workloads: tuple[str, ...]):
    from ui.models import build_home

    return build_home(overview(org, period, compare_period, today), projects, environments, workloads)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def projects_model(org: str, period: str, compare_period: str, today: date,
                   projects: tuple[str, ...], environments: tuple[str, ...], workloads: tuple[str, ...]):
    from ui.models import build_projects

    return build_projects(overview(org, period, compare_period, today), projects, environments, workloads)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def project_model(org: str, period: str, compare_period: str, today: date, project: str,
                  projects: tuple[str, ...], environments: tuple[str, ...], workloads: tuple[str, ...]):
    from ui.models import build_project

    return build_project(overview(org, period, compare_period, today), project, projects, environments, workloads)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def lanes_model(org: str, period: str, compare_period: str, today: date, dim: str,
                projects: tuple[str, ...], environments: tuple[str, ...], workloads: tuple[str, ...]):
    from ui.models import build_lanes

    return build_lanes(overview(org, period, compare_period, today), dim, projects, environments, workloads)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def invoice_model(org: str, period: str, compare_period: str, today: date):
    """The invoice page: document, tables, CSV and JSON downloads (the document's as-of follows
    the overview: month to date for the open period, none for a closed one)."""
    from datetime import datetime

    from metering.forecast import projection_json
    from metering.invoice import document_from
    from ui.models import build_invoice, invoice_as_of

    # the overview already holds the card, the period's usage, the invoice and the projection
    ov = overview(org, period, compare_period, today)
    as_of = invoice_as_of(ov)
    doc = document_from(org, period, datetime.fromisoformat(as_of) if as_of else None, rate_card(period),
                        ov.usage, ov.invoice, projection_json(ov.projection) if ov.projection else None)
    return build_invoice(doc)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def forecast_model(org: str, period: str, compare_period: str, today: date,
                   projects: tuple[str, ...], environments: tuple[str, ...], workloads: tuple[str, ...]):
    from ui.models import build_forecast

    return build_forecast(overview(org, period, compare_period, today), projects, environments, workloads)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def keys_model(org: str, period: str, compare_period: str, today: date,
               projects: tuple[str, ...], environments: tuple[str, ...], workloads: tuple[str, ...]):
    from ui.models import build_keys

    ov = overview(org, period, compare_period, today)
    # the overview's cached history (same key), cut at the invoice's as-of day
    history = org_usage(org, history_start(period, compare_period), period_bounds(period)[1]).filter(
        pl.col(DAY) <= ov.invoice.usage_through)
    return build_keys(ov, api_keys(org), history, projects, environments, workloads)


@_org_scoped
@st.cache_resource(ttl=TTL, max_entries=MAX_MODELS, show_spinner=False)
def rate_card_model(org: str, period: str):
    """The Data page's rate card table and the org's terms (None: no card is in force)."""
    from ui.models import build_rate_card

    card = rate_card(period)
    return None if card is None else build_rate_card(card, org)


@_org_scoped
@st.cache_resource(ttl=30, max_entries=64, show_spinner=False)
def quarantine(org: str, limit: int = 500):
    """The org's quarantined rows, newest first, as a display table (``pyarrow.Table``)."""
    from queries.store import quarantine_rows

    return quarantine_rows(reader([org]), [org], limit=limit).to_arrow()


MODELS = (home_model, projects_model, project_model, lanes_model, invoice_model, forecast_model, keys_model,
          rate_card_model, quarantine)


def clear() -> None:
    """Forget every cached result (after a write): data caches, frames and page models.

    The engines (also cache_resource) are kept."""
    st.cache_data.clear()
    for cached in (org_usage, overview, *MODELS, _ingest_runs):
        cached.clear()


def ingest_runs(limit: int = 30):
    """Recent ingest runs across every org (``pyarrow.Table``): operator data for platform admins
    (and local mode)."""
    p = st.session_state.get(PRINCIPAL_KEY)
    if not isinstance(p, Principal):
        raise AccessDenied("nobody signed in may read ingest runs")
    p.require_platform(Role.ADMIN)  # before the cache: operator data of every org
    return _ingest_runs(limit)


@st.cache_resource(ttl=30, max_entries=4, show_spinner=False)
def _ingest_runs(limit: int):
    """Cached read of the recent ingest runs, as a display table; call ``ingest_runs`` (checked)."""
    from queries.store import ingest_runs as runs

    return runs(engine(), limit=limit).to_arrow()
