"""CLI identity and org isolation on SQLite and PostgreSQL: `--user` / $METERING_USER scope every
command to the user's memberships; a foreign or unknown org is refused with the same message and
nothing of it is printed; budget writes need finance, `pricing load`/`ingest`/`demo`/`init-db`
need platform admin; `access list|grant|revoke` round trip and its own role rules."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from metering.cli import main
from queries.access import grant
from queries.schema import budgets, ingest_runs, memberships, rate_cards
from tests.billing_helpers import engine_url, insert_usage, row

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "pricing" / "default.toml"
A, B = "acme-insurance", "borealis-health"
PERIOD = "2026-03"


@pytest.fixture
def db(engine, capsys, monkeypatch):
    monkeypatch.delenv("METERING_USER", raising=False)
    insert_usage(engine, [
        row(org=A, project="underwriting", quantity=9000, day=date(2026, 3, 3)),
        row(org=A, project="claims", meter="report_job", quantity=3, day=date(2026, 3, 4)),
        row(org=B, project="secret-clinical-project", quantity=777, day=date(2026, 3, 5)),
    ])
    url = engine_url(engine)
    assert main(["--database-url", url, "pricing", "load", str(CARD)]) == 0
    everyone = [A, B, "*"]
    for user, org, role in [("alice", A, "viewer"), ("fin", A, "finance"), ("boss", A, "admin"),
                            ("root", "*", "admin"), ("bea", B, "viewer"), ("watcher", "*", "viewer")]:
        grant(engine, everyone, user, org, role)
    for org in (A, B):
        assert main(["--database-url", url, "budgets", "set", "--org", org, "--amount", "10.00",
                     "--name", f"budget of {org}"]) == 0
    capsys.readouterr()
    return url


def cli(url, *argv, user=None):
    return main(["--database-url", url, *(["--user", user] if user else []), *argv])


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize("command", ["summary", "invoice"])
@pytest.mark.parametrize("org", [B, "no-such-org"])
def test_foreign_or_unknown_org_is_refused_alike_and_reveals_nothing(db, capsys, command, org):
    assert cli(db, command, "--org", org, "--period", PERIOD, "--json", user="alice") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: no access to org '{org}'\n"  # same text whether the org exists or not


@pytest.mark.parametrize("command", ["summary", "invoice"])
def test_own_org_gives_the_operators_document(db, capsys, command):
    assert cli(db, command, "--org", A, "--period", PERIOD, "--json") == 0
    operator = json.loads(capsys.readouterr().out)
    assert cli(db, command, "--org", A, "--period", PERIOD, "--json", user="alice") == 0
    assert json.loads(capsys.readouterr().out) == operator
    assert B not in json.dumps(operator) and "secret-clinical-project" not in json.dumps(operator)


def test_summary_values_for_the_member(db, capsys):
    assert cli(db, "summary", "--org", A, "--period", PERIOD, "--json", user="alice") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["lookups"] == 9000 and doc["report_jobs"] == 3


def test_platform_membership_sees_every_org(db, capsys):
    assert cli(db, "summary", "--org", B, "--period", PERIOD, "--json", user="watcher") == 0
    assert json.loads(capsys.readouterr().out)["lookups"] == 777


def test_metering_user_env_is_the_default_identity(db, capsys, monkeypatch):
    monkeypatch.setenv("METERING_USER", "alice")
    assert main(["--database-url", db, "summary", "--org", B, "--period", PERIOD]) == 2
    assert capsys.readouterr().err == f"error: no access to org '{B}'\n"
    assert main(["--database-url", db, "--user", "bea", "summary", "--org", B, "--period", PERIOD]) == 0


def _orgs_in(doc) -> set[str]:
    found = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "org":
                found.add(v)
            found |= _orgs_in(v)
    elif isinstance(doc, list):
        for v in doc:
            found |= _orgs_in(v)
    return found


def test_alerts_and_budget_list_show_only_the_users_orgs(db, capsys):
    assert cli(db, "alerts", "--as-of", "2026-03-20T00:00:00Z", "--json") in (0, 1)
    assert _orgs_in(json.loads(capsys.readouterr().out)) == {A, B}  # the operator sees both
    assert cli(db, "alerts", "--as-of", "2026-03-20T00:00:00Z", "--json", user="alice") in (0, 1)
    out = capsys.readouterr().out
    assert _orgs_in(json.loads(out)) == {A} and B not in out
    assert cli(db, "budgets", "list", "--json", user="alice") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [b["org"] for b in listed] == [A] and listed[0]["name"] == f"budget of {A}"
    for argv in (["alerts", "--org", B], ["budgets", "list", "--org", B]):
        assert cli(db, *argv, user="alice") == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: no access to org '{B}'\n"
    assert cli(db, "alerts", "--json", user="nobody") == 0  # no memberships: nothing to evaluate
    assert json.loads(capsys.readouterr().out)["budgets"] == []


def test_budget_writes_need_finance(db, engine, capsys):
    before = count(engine, budgets)
    assert cli(db, "budgets", "set", "--org", A, "--scope", "project", "--value", "claims", "--amount", "5",
               user="alice") == 2
    assert capsys.readouterr().err == f"error: alice needs the finance role in org '{A}' (has viewer)\n"
    assert cli(db, "budgets", "delete", "--org", A, "--scope", "org", user="alice") == 2
    assert "needs the finance role" in capsys.readouterr().err
    assert count(engine, budgets) == before
    assert cli(db, "budgets", "set", "--org", B, "--amount", "5", user="fin") == 2
    assert capsys.readouterr().err == f"error: no access to org '{B}'\n"
    assert cli(db, "budgets", "set", "--org", A, "--scope", "project", "--value", "claims", "--amount", "5",
               user="fin") == 0
    assert count(engine, budgets) == before + 1
    assert cli(db, "budgets", "delete", "--org", A, "--scope", "project", "--value", "claims",
               user="fin") == 0
    assert count(engine, budgets) == before


@pytest.mark.parametrize("user", ["boss", "alice", "watcher", "nobody"])
def test_platform_wide_commands_need_platform_admin(db, engine, capsys, tmp_path, user):
    events = tmp_path / "e.csv"
    events.write_text("event_id,occurred_at,org,project,environment,api_key,meter,workload,channel\n"
                      f"x1,2026-03-02T00:00:00Z,{A},p,production,k,lookup,w,api\n")
    cards, runs = count(engine, rate_cards), count(engine, ingest_runs)
    for argv in (["pricing", "load", str(CARD)], ["ingest", str(events)], ["demo", "--days", "2"],
                 ["init-db"]):
        assert cli(db, *argv, user=user) == 2, argv
        out, err = capsys.readouterr()
        assert err == f"error: {user} needs the platform admin role ('*' membership)\n"
    assert (count(engine, rate_cards), count(engine, ingest_runs)) == (cards, runs)
    assert cli(db, "pricing", "load", str(CARD), user="root") == 0
    assert cli(db, "ingest", str(events), user="root") == 0
    assert (count(engine, rate_cards), count(engine, ingest_runs)) == (cards + 1, runs + 1)
    with engine.connect() as conn:  # the run is recorded as the user's, not the OS login's
        last = sa.select(ingest_runs.c.run_by).order_by(ingest_runs.c.id.desc()).limit(1)
        assert conn.execute(last).scalar_one() == "root"


def _listed(db, capsys, user=None, *extra):
    assert cli(db, "access", "list", "--json", *extra, user=user) == 0
    return sorted((m["user_id"], m["org"], m["role"]) for m in json.loads(capsys.readouterr().out))


def test_access_grant_revoke_list_round_trip(db, engine, capsys):
    everything = _listed(db, capsys)
    assert ("root", "*", "admin") in everything and ("bea", B, "viewer") in everything
    assert len(everything) == count(engine, memberships) == 6
    # an org admin sees and changes only their org
    assert _listed(db, capsys, "boss") == [("alice", A, "viewer"), ("boss", A, "admin"),
                                           ("fin", A, "finance")]
    assert cli(db, "access", "grant", "bob", A, "finance", user="boss") == 0
    assert capsys.readouterr().out == f"granted finance in {A} to bob\n"
    assert ("bob", A, "finance") in _listed(db, capsys, "boss")
    assert cli(db, "summary", "--org", A, "--period", PERIOD, user="bob") == 0
    capsys.readouterr()
    assert cli(db, "access", "grant", "bob", A, "viewer", user="boss") == 0  # a change, not a second row
    assert capsys.readouterr().out == f"granted viewer in {A} to bob\n"
    assert ("bob", A, "viewer") in _listed(db, capsys, "boss", "--org", A)
    assert cli(db, "access", "grant", "bob", B, "viewer", user="boss") == 2
    assert capsys.readouterr().err == f"error: no access to org '{B}'\n"
    assert cli(db, "access", "grant", "bob", "*", "admin", user="boss") == 2
    assert "platform admin" in capsys.readouterr().err
    assert cli(db, "access", "list", "--org", B, user="boss") == 2
    assert capsys.readouterr().err == f"error: no access to org '{B}'\n"
    assert cli(db, "access", "grant", "eve", A, "viewer", user="alice") == 2  # a viewer cannot grant
    assert capsys.readouterr().err == f"error: alice needs the admin role in org '{A}' (has viewer)\n"
    assert cli(db, "access", "grant", "eve", A, "owner", user="boss") == 2
    assert "unknown role 'owner'" in capsys.readouterr().err
    # revoke: the membership is gone and so is the access
    assert cli(db, "access", "revoke", "bob", A, user="boss") == 0
    assert capsys.readouterr().out == f"revoked bob's membership in {A}\n"
    assert ("bob", A, "viewer") not in _listed(db, capsys)
    assert cli(db, "summary", "--org", A, "--period", PERIOD, user="bob") == 2
    assert capsys.readouterr().err == f"error: no access to org '{A}'\n"
    assert cli(db, "access", "revoke", "bob", A, user="boss") == 2
    assert "has no membership" in capsys.readouterr().err
    # the platform admin manages platform memberships; the operator anything
    assert cli(db, "access", "grant", "ops", "*", "viewer", user="root") == 0
    assert cli(db, "access", "revoke", "watcher", "*") == 0
    capsys.readouterr()
    expected = [*(m for m in everything if m[0] != "watcher"), ("ops", "*", "viewer")]
    assert _listed(db, capsys) == sorted(expected)
