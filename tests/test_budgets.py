"""Budgets: CRUD + validation on SQLite and PostgreSQL, threshold states by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from metering.budgets import (
    CROSSED,
    FORECAST,
    OK,
    Budget,
    BudgetError,
    create_budget,
    delete_budget,
    list_budgets,
    parse_amount,
    parse_thresholds,
    threshold_states,
    update_budget,
)
from queries.schema import api_keys, organizations, projects
from queries.usage import UnscopedQuery

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def seed_registry(engine) -> None:
    with engine.begin() as conn:
        conn.execute(organizations.insert(),
                     [{"org": o, "name": o, "created_at": NOW} for o in ("acme", "beta")])
        conn.execute(projects.insert(), [
            {"org": "acme", "project": "underwriting", "created_at": NOW},
            {"org": "beta", "project": "exports", "created_at": NOW},
        ])
        conn.execute(api_keys.insert(), [{"org": "acme", "api_key": "key-1", "project": "underwriting",
                                          "environment": "production", "created_at": NOW}])


def test_crud_round_trip(engine):
    seed_registry(engine)
    orgs = {"acme"}
    b = create_budget(engine, orgs, org="acme", scope="org", scope_value="acme", amount_cents=250000)
    assert (b.org, b.scope, b.scope_value, b.amount_cents, b.thresholds) == ("acme", "org", "acme", 250000,
                                                                           (50, 80, 100))
    p = create_budget(engine, orgs, org="acme", scope="project", scope_value="underwriting",
                      amount_cents=1000, thresholds="25,100,150", name="UW")
    k = create_budget(engine, orgs, org="acme", scope="api_key", scope_value="key-1", amount_cents=99)
    assert [x.id for x in list_budgets(engine, orgs)] == [k.id, b.id, p.id]  # api_key < org < project
    u = update_budget(engine, orgs, p.id, amount_cents=2000, thresholds=[90, 100])
    assert (u.amount_cents, u.thresholds, u.name, u.scope_value) == (2000, (90, 100), "UW", "underwriting")
    delete_budget(engine, orgs, k.id)
    assert [x.id for x in list_budgets(engine, orgs)] == [b.id, p.id]
    with pytest.raises(BudgetError, match="no budget with id"):
        delete_budget(engine, orgs, k.id)


def test_reads_and_writes_are_scoped_by_org(engine):
    seed_registry(engine)
    other = create_budget(engine, {"beta"}, org="beta", scope="project", scope_value="exports",
                          amount_cents=500)
    assert list_budgets(engine, {"acme"}) == []
    assert [b.id for b in list_budgets(engine, {"acme", "beta"})] == [other.id]
    with pytest.raises(BudgetError, match="id: no budget"):
        update_budget(engine, {"acme"}, other.id, amount_cents=1)
    with pytest.raises(BudgetError, match="id: no budget"):
        delete_budget(engine, {"acme"}, other.id)
    with pytest.raises(BudgetError, match="org: org 'beta' is not one you can see"):
        create_budget(engine, {"acme"}, org="beta", scope="org", scope_value="beta", amount_cents=1)
    with pytest.raises(UnscopedQuery):
        list_budgets(engine, None)


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"amount_cents": 0}, "amount_cents", "must be positive"),
    ({"amount_cents": -5}, "amount_cents", "must be positive"),
    ({"amount_cents": 12.5}, "amount_cents", "whole cents"),
    ({"thresholds": "80,50"}, "thresholds", "ascending and unique"),
    ({"thresholds": "50,50"}, "thresholds", "ascending and unique"),
    ({"thresholds": "0,50"}, "thresholds", "outside 1..1000"),
    ({"thresholds": "50,1001"}, "thresholds", "outside 1..1000"),
    ({"thresholds": "50,,80"}, "thresholds", "expected percents"),
    ({"thresholds": "fifty"}, "thresholds", "whole percents"),
    ({"thresholds": []}, "thresholds", "at least one"),
    ({"scope": "team"}, "scope", "one of org, project, api_key"),
    ({"scope_value": "nope"}, "scope_value", "project 'nope' does not exist for org 'acme'"),
    ({"scope": "api_key", "scope_value": "key-9"}, "scope_value", "API key 'key-9' does not exist"),
    ({"scope": "org", "scope_value": "beta"}, "scope_value", "must be the org itself"),
    ({"scope_value": "exports"}, "scope_value", "project 'exports' does not exist for org 'acme'"),
])
def test_validation_names_the_field(engine, kwargs, field, message):
    seed_registry(engine)
    args = {"org": "acme", "scope": "project", "scope_value": "underwriting", "amount_cents": 1000,
            "thresholds": "50,80,100"} | kwargs
    with pytest.raises(BudgetError, match=message) as exc:
        create_budget(engine, {"acme"}, **args)
    assert exc.value.field == field
    assert list_budgets(engine, {"acme"}) == []


def test_duplicate_scope_is_refused(engine):
    seed_registry(engine)
    create_budget(engine, {"acme"}, org="acme", scope="org", scope_value="acme", amount_cents=100)
    with pytest.raises(BudgetError, match="already exists"):
        create_budget(engine, {"acme"}, org="acme", scope="org", scope_value="acme", amount_cents=200)


def test_project_known_only_from_usage_is_accepted(engine):
    from queries.schema import usage_daily

    with engine.begin() as conn:
        conn.execute(usage_daily.insert(), [{
            "day": date(2026, 3, 2), "org": "gamma", "project": "late-project", "environment": "production",
            "api_key": "k", "meter": "lookup", "workload": "w", "channel": "api", "status": "success",
            "retry": False, "eligible": True, "quantity_micros": 1_000_000, "events": 1,
        }])
        assert conn.execute(sa.select(sa.func.count()).select_from(organizations)).scalar() == 0
    b = create_budget(engine, {"gamma"}, org="gamma", scope="project", scope_value="late-project",
                      amount_cents=100)
    assert b.scope_value == "late-project"


def test_parse_amount_and_thresholds():
    assert parse_amount("2500") == 250000
    assert parse_amount("$1,234.56") == 123456
    bad_amounts = (("12.345", "two decimals"), ("0", "positive"), ("abc", "dollar amount"),
                   ("-1", "positive"))
    for bad, msg in bad_amounts:
        with pytest.raises(BudgetError, match=msg):
            parse_amount(bad)
    assert parse_thresholds(" 50, 80 ,100") == (50, 80, 100)


def _budget(amount: int, ths=(50, 80, 100)) -> Budget:
    return Budget(1, "acme", "org", "acme", amount, tuple(ths), None)


def test_threshold_states_and_dates_by_hand():
    # budget $100.00; cumulative spend $30, $49.99, $50.00, $79.00 on days 1..4 (actual)
    actual = [(date(2026, 3, d), c) for d, c in ((1, 3000), (2, 4999), (3, 5000), (4, 7900))]
    projected = [(date(2026, 3, 5), 8500), (date(2026, 3, 6), 9999)]
    states = threshold_states(_budget(10000), actual, projected, (date(2026, 3, 31), 10000))
    assert [(s.percent, s.threshold_cents, s.state, s.on) for s in states] == [
        (50, 5000, CROSSED, date(2026, 3, 3)),  # exactly 50% counts as reached
        (80, 8000, FORECAST, date(2026, 3, 5)),
        (100, 10000, FORECAST, date(2026, 3, 31)),  # only the period-end total (true-up) reaches it
    ]
    none = threshold_states(_budget(10000), actual, projected)
    assert none[2].state == OK and none[2].on is None


def test_fractional_threshold_rounds_up_to_the_cent():
    # 50% of $1.01 is 50.5 cents: reached at 51 cents, not at 50
    states = threshold_states(_budget(101, (50,)), [(date(2026, 3, 1), 50), (date(2026, 3, 2), 51)])
    assert (states[0].threshold_cents, states[0].state, states[0].on) == (51, CROSSED, date(2026, 3, 2))
