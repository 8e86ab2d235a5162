"""Cached page models (ui/models.py, cached in ui/data.py), on the demo data in SQLite and PostgreSQL.

- The numbers a model holds equal what the CLI prints (invoice total, the invoice JSON document)
  or a hand filter of the usage rows, whole org and sliced.
- The chart spec's Arrow dataset sums to the same total as the KPI.
- A model is cached as one shared object (no copy per hit), ``show`` leaves it unchanged, and
  ``data.clear()`` drops it.
- Org isolation: a model that one user's session put in the shared cache is refused to a user
  outside that org (the check runs before the cache), for every model loader.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from metering.cli import main as cli_main
from metering.periods import shift_period

ORG_A, ORG_B = "acme-insurance", "borealis-health"


@pytest.fixture(params=["sqlite", "postgresql"])
def demo_url(request, monkeypatch):
    url = request.getfixturevalue("demo_sqlite_url" if request.param == "sqlite" else "demo_pg_url")
    monkeypatch.setenv("METERING_DATABASE_URL", url)
    monkeypatch.delenv("METERING_AUTH", raising=False)
    from streamlit import cache_data, cache_resource

    cache_data.clear()
    cache_resource.clear()
    return url


def _cli_json(url: str, capsys, *args) -> dict:
    capsys.readouterr()
    assert cli_main(["--database-url", url, *args]) == 0
    return json.loads(capsys.readouterr().out)


def _models_script():
    """Fill the models for the period in session state and publish their numbers as text."""
    import copy
    import json as _json

    import pyarrow as _pa
    import streamlit as st

    from metering.access import Principal, Role
    from ui import charts, data

    st.session_state["_principal"] = Principal("t@x", "t@x", "test", {st.session_state["_org"]: Role.VIEWER})
    org, period, prev, today = (st.session_state[k] for k in ("_org", "_period", "_prev", "_today"))
    envs = tuple(st.session_state.get("_envs", ()))
    home = data.home_model(org, period, prev, today, (), envs, ())
    again = data.home_model(org, period, prev, today, (), envs, ())
    spec_before = copy.deepcopy(home.daily_spec)
    charts.show(home.daily_spec)
    inv = data.invoice_model(org, period, prev, today)
    (name, arrow), = home.daily_spec["datasets"].items()
    chart_usd = _pa.ipc.open_stream(arrow).read_all().column("usd").to_pylist()
    st.text(_json.dumps({
        "total": home.total,
        "lines_amount": home.lines.column("Amount").to_pylist(),
        "chart_usd": chart_usd,
        "same_object": again is home,
        "spec_unchanged": spec_before == home.daily_spec,
        "invoice_json": inv.json,
        "invoice_csv": inv.csv,
        "funnel_rows": inv.funnel.num_rows,
        "funnel_len": len(inv.doc["funnel"]),
    }))
    data.clear()
    st.text(_json.dumps({"after_clear_new_object": data.home_model(org, period, prev, today, (), envs, ())
                         is not home}))


def _run_models(url: str, org: str, period: str, envs=()) -> list[dict]:
    from metering.periods import utcnow

    at = AppTest.from_function(_models_script, default_timeout=120)
    at.session_state["_org"], at.session_state["_period"] = org, period
    at.session_state["_prev"], at.session_state["_today"] = shift_period(period, -1), utcnow().date()
    at.session_state["_envs"] = list(envs)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return [json.loads(t.value) for t in at.text]


def test_home_and_invoice_models_equal_the_cli(demo_url, demo_period, capsys):
    closed = shift_period(demo_period, -1)
    doc = _cli_json(demo_url, capsys, "invoice", "--org", ORG_A, "--period", closed, "--json")
    out, after = _run_models(demo_url, ORG_A, closed)
    total_cents = int(Decimal(str(doc["total"])) * 100)
    assert out["total"] == total_cents > 0
    # the line table and the chart's data are display dollars of the same cents
    assert round(sum(out["lines_amount"]) * 100) == total_cents
    # the daily chart has no true-up (it has no day)
    assert round(sum(out["chart_usd"]) * 100) == total_cents - int(Decimal(str(doc["true_up"])) * 100)
    # the download is the CLI's document, byte for byte after parsing
    assert json.loads(out["invoice_json"]) == doc
    rows = list(__import__("csv").reader(io.StringIO(out["invoice_csv"])))
    assert rows[0] == ["meter", "environment", "quantity", "amount"]
    assert [r[0] for r in rows[1:]] == [ln["meter"] for ln in doc["lines"]]
    assert out["funnel_rows"] == out["funnel_len"] == len(doc["funnel"])
    # cached as one shared object, not changed by rendering, dropped by clear()
    assert out["same_object"] and out["spec_unchanged"] and after["after_clear_new_object"]


def test_sliced_home_model_equals_a_hand_filter_of_the_breakdown(demo_url, demo_period, capsys):
    closed = shift_period(demo_period, -1)
    doc = _cli_json(demo_url, capsys, "invoice", "--org", ORG_A, "--period", closed, "--json")
    by_env = doc["breakdowns"]["environment"]
    prod = sum(Decimal(str(r["amount"])) for r in by_env if r.get("environment") == "production")
    out, _ = _run_models(demo_url, ORG_A, closed, envs=("production",))
    assert 0 < out["total"] == int(prod * 100) < int(Decimal(str(doc["total"])) * 100)


def _isolation_script():
    import streamlit as st

    from metering.access import AccessDenied, Principal, Role
    from ui import data

    org = st.session_state["_member_of"]
    st.session_state["_principal"] = Principal("u@x", "u@x", "test", {org: Role.VIEWER})
    p, prev, today = st.session_state["_period"], st.session_state["_prev"], st.session_state["_today"]
    calls = {
        "home_model": lambda o: data.home_model(o, p, prev, today, (), (), ()),
        "projects_model": lambda o: data.projects_model(o, p, prev, today, (), (), ()),
        "lanes_model": lambda o: data.lanes_model(o, p, prev, today, "project", (), (), ()),
        "invoice_model": lambda o: data.invoice_model(o, p, prev, today),
        "forecast_model": lambda o: data.forecast_model(o, p, prev, today, (), (), ()),
        "keys_model": lambda o: data.keys_model(o, p, prev, today, (), (), ()),
        "rate_card_model": lambda o: data.rate_card_model(o, p),
        "quarantine": lambda o: data.quarantine(o),
    }
    for name, call in calls.items():
        for o in ("acme-insurance", "borealis-health"):
            try:
                call(o)
                st.text(f"{name} {o} served")
            except AccessDenied:
                st.text(f"{name} {o} denied")


def test_model_loaders_refuse_a_cached_model_of_another_org(demo_url, demo_period):
    from metering.periods import utcnow

    closed = shift_period(demo_period, -1)

    def run(member_of: str) -> list[str]:
        at = AppTest.from_function(_isolation_script, default_timeout=120)
        at.session_state["_member_of"], at.session_state["_period"] = member_of, closed
        at.session_state["_prev"], at.session_state["_today"] = shift_period(closed, -1), utcnow().date()
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return [t.value for t in at.text]

    names = ["home_model", "projects_model", "lanes_model", "invoice_model", "forecast_model", "keys_model",
             "rate_card_model", "quarantine"]
    b_user = run(ORG_B)  # B's models are now in the shared cache
    assert b_user == [line for n in names for line in (f"{n} {ORG_A} denied", f"{n} {ORG_B} served")]
    a_user = run(ORG_A)  # and still refused to a user of A only
    assert a_user == [line for n in names for line in (f"{n} {ORG_A} served", f"{n} {ORG_B} denied")]


def test_display_tables_are_arrow_with_the_pages_columns():
    """``table`` keeps values and column names (no pandas index, dates stay dates)."""
    from datetime import date

    from ui.models import table

    frame = pl.DataFrame({"Day": [date(2026, 10, 1), None], "Spend": [1.25, 0.5], "Lane": ["a", "b"]})
    t = table(frame)
    assert isinstance(t, pa.Table)
    assert t.column_names == ["Day", "Spend", "Lane"]
    assert t.column("Day").to_pylist() == [date(2026, 10, 1), None]
    assert t.column("Spend").to_pylist() == [1.25, 0.5]
