"""PostgreSQL least privilege (queries.roles, `init-roles`) and row-level security by org.

Roles are cluster-wide: every test run creates its own uniquely named group and login roles in
the test database and drops them afterwards (DROP OWNED + DROP ROLE).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa

from metering.budgets import create_budget, delete_budget, list_budgets, update_budget
from metering.cli import main
from metering.ingest import ingest_frame
from queries.access import grant, list_memberships
from queries.engine import (
    DatabasePermissionDenied,
    drop_database,
    make_engine,
    recreate_database,
    scoped_engine,
)
from queries.filters import known_orgs
from queries.roles import RoleSetupError, drop_roles, org_tables, rls_state, setup_roles
from queries.schema import budgets, metadata, usage_daily
from queries.usage import load_usage

NOW = datetime(2026, 3, 20, tzinfo=UTC)


def _events(org: str, n: int, prefix: str = "ev") -> pl.DataFrame:
    """n lookups of one org on 2026-03-10, quantity i+1 (sum n(n+1)/2)."""
    return pl.DataFrame({
        "event_id": [f"{prefix}-{i}" for i in range(n)],
        "occurred_at": [f"2026-03-10T{i % 24:02d}:00:00Z" for i in range(n)],
        "org": [org] * n,
        "project": ["proj-1"] * n,
        "environment": ["production"] * n,
        "api_key": ["key-1"] * n,
        "meter": ["lookup"] * n,
        "workload": ["underwriting"] * n,
        "channel": ["api"] * n,
        "quantity": [str(i + 1) for i in range(n)],
        "status": ["success"] * n,
        "attempt": ["1"] * n,
    })


def _clear(engine: sa.Engine) -> None:
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")


def _url_as(engine: sa.Engine, login: str) -> str:
    return engine.url.set(username=login, password=None).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def roles(pg_engine):
    """Unique group roles + one login each; RLS off to start; everything dropped at the end."""
    sfx = uuid.uuid4().hex[:8]
    names = {
        "reader": f"mt_reader_{sfx}", "writer": f"mt_writer_{sfx}",
        "reader_login": f"mt_rlogin_{sfx}", "writer_login": f"mt_wlogin_{sfx}",
    }
    report = setup_roles(pg_engine, reader=names["reader"], writer=names["writer"], rls=False,
                         reader_logins=(names["reader_login"],), writer_logins=(names["writer_login"],))
    engines = {
        "reader_engine": make_engine(_url_as(pg_engine, names["reader_login"])),
        "writer_engine": make_engine(_url_as(pg_engine, names["writer_login"])),
    }
    yield {**names, **engines, "report": report}
    for eng in engines.values():
        eng.dispose()
    setup_roles(pg_engine, reader=names["reader"], writer=names["writer"], rls=False)
    drop_roles(pg_engine, (names["reader_login"], names["writer_login"], names["reader"], names["writer"]))
    with pg_engine.begin() as conn:
        db = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        conn.exec_driver_sql(f'GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO PUBLIC')
        left = conn.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname LIKE :p"),
                            {"p": f"mt\\_%\\_{sfx}"}).scalar_one()
    assert left == 0


@pytest.fixture
def fresh(pg_engine, roles):
    _clear(pg_engine)
    yield roles
    setup_roles(pg_engine, reader=roles["reader"], writer=roles["writer"], rls=False)


def _denied(engine: sa.Engine, sql: str) -> DatabasePermissionDenied:
    with pytest.raises(DatabasePermissionDenied) as info, engine.begin() as conn:
        conn.exec_driver_sql(sql)
    assert isinstance(info.value.__cause__, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(info.value)
    return info.value


def test_grants_are_exactly_select_for_reader_and_dml_for_writer(pg_engine, roles):
    reader, writer = roles["reader"], roles["writer"]
    assert set(roles["report"].created) == {reader, writer}
    privs = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with pg_engine.connect() as conn:
        for t in metadata.sorted_tables:
            for role, allowed in ((reader, {"SELECT"}), (writer, {"SELECT", "INSERT", "UPDATE", "DELETE"})):
                have = {p for p in privs if conn.execute(
                    sa.text("SELECT has_table_privilege(:r, :t, :p)"), {"r": role, "t": t.name, "p": p}
                ).scalar_one()}
                assert have == allowed, (role, t.name, have)
        db = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        for role, temp in ((reader, False), (writer, True)):
            assert conn.execute(sa.text("SELECT has_database_privilege(:r, :d, 'CONNECT')"),
                                {"r": role, "d": db}).scalar_one() is True
            assert conn.execute(sa.text("SELECT has_database_privilege(:r, :d, 'TEMPORARY')"),
                                {"r": role, "d": db}).scalar_one() is temp
            assert conn.execute(sa.text("SELECT has_schema_privilege(:r, 'public', 'CREATE')"),
                                {"r": role}).scalar_one() is False
        assert conn.execute(sa.text("SELECT has_sequence_privilege(:r, 'budgets_id_seq', 'USAGE')"),
                            {"r": writer}).scalar_one() is True
        assert conn.execute(sa.text("SELECT has_sequence_privilege(:r, 'budgets_id_seq', 'USAGE')"),
                            {"r": reader}).scalar_one() is False


def test_setup_is_idempotent_and_revokes_extra_grants(pg_engine, roles):
    reader = roles["reader"]
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'GRANT INSERT, TRUNCATE ON budgets TO "{reader}"')
    again = setup_roles(pg_engine, reader=reader, writer=roles["writer"],
                        reader_logins=(roles["reader_login"],))
    assert again.created == [] and again.rls is None
    assert "existing role" in again.logins[0]
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT has_table_privilege(:r, 'budgets', 'INSERT') "
                                    "OR has_table_privilege(:r, 'budgets', 'TRUNCATE')"),
                            {"r": reader}).scalar_one() is False


def test_reader_selects_but_cannot_write_or_ddl(pg_engine, fresh):
    assert ingest_frame(pg_engine, _events("org-a", 4), "owner.csv", now=NOW).accepted == 4
    reader = fresh["reader_engine"]
    with reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(usage_daily.c.quantity_micros))).scalar_one() == 10 * 10**6
    _denied(reader, "INSERT INTO budgets (org, scope, scope_value, amount_cents, thresholds, created_at, "
                    "updated_at) VALUES ('org-a', 'org', 'org-a', 100, '50', now(), now())")
    _denied(reader, "UPDATE usage_daily SET events = 0")
    _denied(reader, "DELETE FROM usage_events")
    _denied(reader, "TRUNCATE usage_daily")
    _denied(reader, "CREATE TABLE sneaky (x int)")
    _denied(reader, "CREATE TEMPORARY TABLE sneaky (x int)")
    _denied(reader, "ALTER TABLE budgets ADD COLUMN x int")
    with pytest.raises(DatabasePermissionDenied):
        ingest_frame(reader, _events("org-a", 2, "r"), "reader.csv", now=NOW)
    with pg_engine.connect() as conn:  # nothing changed
        assert conn.execute(sa.select(sa.func.sum(usage_daily.c.events))).scalar_one() == 4


def test_writer_ingests_and_edits_budgets_but_no_ddl(pg_engine, fresh):
    writer = fresh["writer_engine"]
    first = ingest_frame(writer, _events("org-a", 5), "w1.csv", now=NOW)
    assert (first.accepted, first.duplicates) == (5, 0)
    # a repeat goes through the temporary staging table (TEMPORARY privilege)
    again = ingest_frame(writer, _events("org-a", 6), "w2.csv", now=NOW)
    assert (again.accepted, again.duplicates) == (1, 5)
    assert load_usage(writer, ["org-a"])["quantity_micros"].to_list() == [21 * 10**6]  # 1+..+6
    b = create_budget(writer, ["org-a"], org="org-a", scope="org", scope_value="org-a", amount_cents=5000)
    assert update_budget(writer, ["org-a"], b.id, amount_cents=7500).amount_cents == 7500
    grant(writer, ["org-a"], "ann", "org-a", "finance")
    assert list_memberships(writer, ["org-a"]).rows() == [("ann", "org-a", "finance")]
    delete_budget(writer, ["org-a"], b.id)
    assert list_budgets(writer, ["org-a"]) == []
    _denied(writer, "TRUNCATE budgets")
    _denied(writer, "CREATE TABLE sneaky (x int)")
    _denied(writer, "DROP TABLE budgets")
    _denied(writer, "ALTER TABLE usage_daily ADD COLUMN x int")
    _denied(writer, "CREATE INDEX ix_sneaky ON budgets (name)")


def _seed_two_orgs(owner: sa.Engine) -> None:
    ingest_frame(owner, pl.concat([_events("org-a", 3, "a"), _events("org-b", 4, "b")]), "two.csv", now=NOW)
    for org in ("org-a", "org-b"):
        create_budget(owner, [org], org=org, scope="org", scope_value=org, amount_cents=1000)


def _orgs_in(engine: sa.Engine, table: sa.Table) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(table.c.org).distinct().order_by(table.c.org))]


def test_rls_reader_sees_only_the_scoped_orgs(pg_engine, fresh):
    _seed_two_orgs(pg_engine)
    report = setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True)
    assert report.rls is True
    assert sorted(report.rls_tables) == sorted(t.name for t in org_tables())
    assert {"usage_daily", "usage_events", "budgets", "memberships", "quarantine",
            "organizations"} <= set(report.rls_tables)
    assert all(rls_state(pg_engine).values())

    reader = fresh["reader_engine"]
    only_a = scoped_engine(reader, {"org-a"})
    assert _orgs_in(only_a, usage_daily) == ["org-a"]
    assert _orgs_in(only_a, budgets) == ["org-a"]
    # the app's queries ask for both orgs; the database still returns only org-a
    usage = load_usage(only_a, ["org-a", "org-b"])
    assert usage["org"].unique().to_list() == ["org-a"]
    assert usage["quantity_micros"].sum() == 6 * 10**6  # 1+2+3
    assert known_orgs(only_a, None) == ["org-a"]
    # every org (platform scope) and the empty scope
    assert _orgs_in(scoped_engine(reader, None), usage_daily) == ["org-a", "org-b"]
    assert _orgs_in(scoped_engine(reader, set()), usage_daily) == []
    # no scope: fail closed on every org table, also on the pooled connection that just had one
    with reader.connect() as conn:
        pid_unscoped = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        for t in org_tables():
            assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() == 0, t.name
    with only_a.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == pid_unscoped
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_daily)).scalar_one() == 1
    assert known_orgs(reader, None) == []
    # the owner is not subject to RLS
    assert _orgs_in(pg_engine, usage_daily) == ["org-a", "org-b"]


def test_rls_scope_is_transaction_local(pg_engine, fresh):
    _seed_two_orgs(pg_engine)
    setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True)
    reader = fresh["reader_engine"]
    with scoped_engine(reader, {"org-b"}).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(budgets)).scalar_one() == 1
        conn.commit()  # the next statement autobegins: the scope is set again
        assert [r[0] for r in conn.execute(sa.select(budgets.c.org))] == ["org-b"]
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    with reader.connect() as plain:  # the same pooled connection, no scope left on it
        assert plain.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == pid
        assert plain.execute(sa.text("SELECT current_setting('metering.orgs', true)")).scalar() == ""
        assert plain.execute(sa.select(sa.func.count()).select_from(budgets)).scalar_one() == 0


def test_rls_writer_still_writes_every_org(pg_engine, fresh):
    report = setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True,
                         writer_logins=(fresh["writer_login"],))
    assert "BYPASSRLS" in report.logins[0] and report.warnings == []
    writer = fresh["writer_engine"]  # a superuser ran the setup: BYPASSRLS, so ingest's COPY works
    result = ingest_frame(writer, pl.concat([_events("org-a", 2, "a"), _events("org-b", 2, "b")]),
                          "w.csv", now=NOW)
    assert result.accepted == 4
    assert _orgs_in(writer, usage_daily) == ["org-a", "org-b"]


def test_rls_writer_login_without_bypassrls_is_reported(pg_engine, fresh):
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER ROLE "{fresh["writer_login"]}" NOBYPASSRLS')
    try:
        report = setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True)
        assert any(fresh["writer_login"] in w and "BYPASSRLS" in w for w in report.warnings)
        # budget edits still work through the writer's policy; COPY (ingest) is refused by PostgreSQL
        writer = fresh["writer_engine"]
        _seed_two_orgs(pg_engine)
        b = list_budgets(writer, ["org-b"])[0]
        assert update_budget(writer, ["org-b"], b.id, amount_cents=2000).amount_cents == 2000
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="row-level security"):
            ingest_frame(writer, _events("org-a", 1, "x"), "x.csv", now=NOW)
    finally:
        with pg_engine.begin() as conn:
            conn.exec_driver_sql(f'ALTER ROLE "{fresh["writer_login"]}" BYPASSRLS')


def test_cli_init_roles(pg_engine, roles, capsys):
    url = pg_engine.url.render_as_string(hide_password=False)
    assert main(["--database-url", url, "init-roles", "--reader-role", roles["reader"],
                 "--writer-role", roles["writer"]]) == 0
    out = capsys.readouterr().out
    assert f"roles {roles['reader']} (read) and {roles['writer']} (write)" in out
    assert f"{len(metadata.sorted_tables) + 1} tables granted" in out  # + alembic_version
    assert "left as it was" in out
    assert main(["--database-url", url, "init-roles", "--reader-role", "Bad-Name"]) == 2
    assert "role name 'Bad-Name'" in capsys.readouterr().err


def test_cli_init_roles_on_sqlite_exits_2(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["--database-url", url, "init-db"]) == 0
    capsys.readouterr()
    assert main(["--database-url", url, "init-roles", "--rls"]) == 2
    assert "init-roles needs PostgreSQL" in capsys.readouterr().err
    with pytest.raises(RoleSetupError, match="need PostgreSQL"):
        setup_roles(make_engine(url))


def test_setup_refuses_bad_names_and_missing_schema(pg_engine, tmp_path):
    with pytest.raises(RoleSetupError, match="role name"):
        setup_roles(pg_engine, reader='x"; DROP TABLE budgets; --')
    with pytest.raises(RoleSetupError, match="must differ"):
        setup_roles(pg_engine, reader="same_role", writer="same_role")
    empty = f"{pg_engine.url.database}_empty"
    admin_url = pg_engine.url.set(database="postgres")
    bare = make_engine(recreate_database(admin_url, empty))
    try:
        with pytest.raises(RoleSetupError, match="init-db"):
            setup_roles(bare, reader="mt_never_made", writer="mt_never_made_w")
    finally:
        bare.dispose()
        drop_database(admin_url, empty)
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mt_never_made%'")
                            ).scalar_one() == 0


def test_rls_settings_are_read_once_per_statement(pg_engine, fresh):
    """The policy reads metering.orgs in scalar subqueries (InitPlans), not once per row."""
    setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True)
    with scoped_engine(fresh["reader_engine"], {"org-a"}).connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN SELECT count(*) FROM usage_daily"))
    assert plan.count("InitPlan") == 2 and "current_setting" not in plan.split("Filter:", 1)[1]
