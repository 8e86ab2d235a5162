"""Cached loads for the app. Functions take filter values (strings, dates), never frames.

Every cache has a ttl and max_entries. The engine is a cached resource. The heavy work is in
metering/ (the same functions the CLI calls); this module only caches it per filter value.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import streamlit as st

from metering.forecast import BACKTEST_PERIODS
from metering.overview import BillingOverview, billing_overview
from metering.periods import period_bounds, shift_period
from metering.pricing import card_for_period
from queries.engine import database_url, make_engine
from queries.filters import known_orgs, org_dimension_values
from queries.usage import load_usage

TTL = 120


@st.cache_resource
def engine():
    return make_engine(database_url(), statement_timeout_ms=15000)


@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def visible_orgs(allowed: frozenset[str] | None) -> list[str]:
    return known_orgs(engine(), allowed)


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def org_options(org: str) -> dict:
    return org_dimension_values(engine(), org, [org])


def history_start(period: str, compare_period: str) -> date:
    """First day the overview needs: the comparison period or the forecast's backtest window."""
    return min(period_bounds(compare_period)[0], period_bounds(shift_period(period, -BACKTEST_PERIODS - 1))[0])


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def org_usage(org: str, start: date, end: date) -> pl.DataFrame:
    return load_usage(engine(), [org], start, end)


@st.cache_data(ttl=TTL, max_entries=32, show_spinner="Pricing the period…")
def overview(org: str, period: str, compare_period: str, today: date) -> BillingOverview:
    end = period_bounds(period)[1]
    usage = org_usage(org, history_start(period, compare_period), end)
    card = card_for_period(engine(), period)
    prev_card = card_for_period(engine(), compare_period)
    return billing_overview(usage, card, org, period, compare_period, today, previous_card=prev_card)


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def rate_card(period: str):
    return card_for_period(engine(), period)


@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def freshness(org: str):
    from metering.freshness import data_freshness

    return data_freshness(engine(), [org])


@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def budget_evaluations(org: str, today: date):
    from metering.alerts import evaluate_alerts

    return evaluate_alerts(engine(), [org], today, org=org)


@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def api_keys(org: str) -> pl.DataFrame:
    from queries.catalog import load_api_keys

    return load_api_keys(engine(), [org])


@st.cache_data(ttl=TTL, max_entries=16, show_spinner=False)
def invoice_document(org: str, period: str, as_of_iso: str | None) -> dict:
    from datetime import datetime

    from metering.invoice import invoice_document as doc

    as_of = datetime.fromisoformat(as_of_iso) if as_of_iso else None
    return doc(engine(), org, period, as_of, orgs=[org])


def clear() -> None:
    st.cache_data.clear()
