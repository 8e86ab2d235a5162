"""Every page through streamlit.testing AppTest, on the demo data in SQLite and PostgreSQL.

Checks: no exception on any page, open and closed periods; the KPIs equal what metering/ (and
the CLI) compute; query params select the view; bad params warn and fall back; a database that
is down gives a message, not a traceback.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from streamlit.testing.v1 import AppTest

from metering.cli import main as cli_main
from metering.money import format_usd
from metering.periods import shift_period
from tests.conftest import ROOT

APP = str(ROOT / "app.py")
PAGES = ["pages/home.py", "pages/lanes.py", "pages/projects.py", "pages/keys.py",
         "pages/forecast.py", "pages/invoice.py", "pages/data.py"]


@pytest.fixture(params=["sqlite", "postgresql"])
def demo_url(request, monkeypatch):
    url = request.getfixturevalue("demo_sqlite_url" if request.param == "sqlite" else "demo_pg_url")
    monkeypatch.setenv("METERING_DATABASE_URL", url)
    from streamlit import cache_data, cache_resource

    cache_data.clear()
    cache_resource.clear()
    return url


def _app(params: dict, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def _cli_json(url: str, capsys, *args) -> dict:
    capsys.readouterr()
    assert cli_main(["--database-url", url, *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("months_back", [0, 1])
def test_every_page_renders_open_and_closed_period(demo_url, demo_period, page, months_back):
    period = shift_period(demo_period, -months_back)
    at = _app({"org": "acme-insurance", "period": period}, page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title and "acme-insurance" in at.title[0].value


def test_home_kpis_equal_the_cli(demo_url, demo_period, capsys):
    closed = shift_period(demo_period, -1)
    at = _app({"org": "acme-insurance", "period": closed})
    assert not at.exception
    inv = _cli_json(demo_url, capsys, "invoice", "--org", "acme-insurance", "--period", closed, "--json")
    metric = {m.label: m.value for m in at.metric}
    assert metric["Invoice total"] == f"${inv['total']:,.2f}"

    # open period: month to date as of today's UTC date
    at = _app({"org": "acme-insurance", "period": demo_period})
    today = datetime.now().astimezone().astimezone().date()
    inv = _cli_json(demo_url, capsys, "invoice", "--org", "acme-insurance", "--period", demo_period,
                    "--as-of", f"{today.isoformat()}T23:59:59+00:00", "--json")
    metric = {m.label: m.value for m in at.metric}
    assert metric["Month-to-date spend"] == f"${inv['total']:,.2f}"
    assert "Projected at period end" in metric


def test_summary_project_costs_match_projects_page(demo_url, demo_period, capsys):
    closed = shift_period(demo_period, -1)
    summary = _cli_json(demo_url, capsys, "summary", "--org", "acme-insurance", "--period", closed, "--json")
    top = summary["project_breakdown"][0]
    at = _app({"org": "acme-insurance", "period": closed}, "pages/projects.py")
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Project spend"] == f"${top['cost_usd']:,.2f}"


def test_query_params_select_the_view(demo_url, demo_period):
    closed = shift_period(demo_period, -1)
    at = _app({"org": "borealis-health", "period": closed, "env": "production", "vs": "last-year"})
    assert not at.exception
    assert at.sidebar.selectbox(key="org").value == "borealis-health"
    assert at.sidebar.selectbox(key="period").value == closed
    assert at.sidebar.multiselect(key="env").value == ["production"]
    assert "compared with " + shift_period(closed, -12) in at.caption[0].value
    assert not at.warning


@pytest.mark.parametrize("params", [
    {"org": "acme-insurance", "period": "2026-13"},
    {"org": "acme-insurance", "project": "someone-elses-project"},
    {"org": "acme-insurance", "env": "staging"},
    {"org": "acme-insurance", "vs": "[x](javascript:alert(1))", "workload": ["a" * 5000, "**bold**"]},
])
def test_bad_params_warn_and_fall_back(demo_url, params):
    at = _app(params)
    assert not at.exception
    assert any("unknown or not visible" in w.value for w in at.warning)
    assert at.sidebar.selectbox(key="org").value == "acme-insurance"
    assert at.metric  # the page still shows a view (the default one)
    shown = " ".join(w.value for w in at.warning)
    if "vs" in params:  # refused values are shown as inert text: no markdown link, no bold
        assert "'?x??javascript?alert?1??'" in shown and "'??bold??'" in shown
        assert "](" not in shown and "**bold**" not in shown


@pytest.mark.parametrize("params", [
    {"org": "no-such-org"},
    {"org": "acme-insurance'; DROP TABLE usage_daily;--"},
    {"org": "\u202e\U0001f4a5" * 50},
    {"org": ["acme-insurance", "borealis-health"]},  # repeated: ambiguous, refused
])
def test_unknown_org_link_shows_no_access_and_no_data(demo_url, params):
    at = _app(params)
    assert not at.exception
    assert at.title[0].value == "No access"
    assert any("No access" in e.value for e in at.error)
    assert not at.metric and not at.dataframe and not at.sidebar.selectbox


def test_filters_narrow_the_kpis(demo_url, demo_period):
    closed = shift_period(demo_period, -1)
    whole = _app({"org": "acme-insurance", "period": closed})
    sliced = _app({"org": "acme-insurance", "period": closed, "project": "production-underwriting"})
    w = {m.label: m.value for m in whole.metric}["Invoice total"]
    s = {m.label: m.value for m in sliced.metric}["Invoice total"]
    to_cents = lambda t: int(t.replace("$", "").replace(",", "").replace(".", ""))  # noqa: E731
    assert 0 < to_cents(s) < to_cents(w)


def test_database_down_gives_a_message(monkeypatch):
    monkeypatch.setenv("METERING_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    from streamlit import cache_data, cache_resource

    cache_data.clear()
    cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "not reachable" in at.error[0].value


def test_format_matches_the_page_format():
    assert format_usd(123456) == "$1,234.56"


def test_slow_database_gives_a_timeout_message(demo_pg_url, demo_period, monkeypatch):
    """A statement past the app's timeout is canceled by PostgreSQL; the page says so, no traceback."""
    import sqlalchemy as sa
    from streamlit import cache_data, cache_resource

    import ui.data

    def slow_load(engine, *args, **kwargs):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(2)"))
        raise AssertionError("the statement timeout did not fire")

    monkeypatch.setenv("METERING_DATABASE_URL", demo_pg_url)
    monkeypatch.setenv("METERING_STATEMENT_TIMEOUT_MS", "200")
    monkeypatch.setattr(ui.data, "load_usage", slow_load)
    cache_data.clear()
    cache_resource.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["org"] = "acme-insurance"
        at.run()
    finally:
        cache_data.clear()
        cache_resource.clear()
    assert not at.exception, [e.value for e in at.exception]
    assert any("took longer than 0.2 s" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.metric  # nothing partial
