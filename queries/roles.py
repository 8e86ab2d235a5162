"""PostgreSQL least privilege: a read-only and a read-write group role, optional row-level security.

Roles (NOLOGIN group roles; login users are made members of them):

- ``metering_reader``: CONNECT on the database, USAGE on the schema, SELECT on every app table
  (and ``alembic_version``). Nothing else: no writes, no DDL, no temporary tables.
- ``metering_writer``: CONNECT and TEMPORARY on the database (ingest stages duplicates in a
  temporary table), USAGE on the schema, SELECT/INSERT/UPDATE/DELETE on every app table, USAGE
  on the schema's sequences. No TRUNCATE, no DDL.

DDL and migrations stay with the owner (the URL ``init-db`` runs with). The setup is idempotent:
each run revokes whatever else the two roles hold on the app tables and grants the list above,
so re-run it after every migration (new tables get their grants and policies then).

Row-level security (``rls=True``): on every table with an ``org`` column, a policy lets the
reader SELECT only rows whose org is in the transaction-local setting ``metering.orgs``
(comma-separated, set by ``queries.engine.scoped_engine``), or every row when
``metering.all_orgs = 'on'``. Without the setting the reader sees no rows (fail closed).
The writer has an unrestricted policy (ingest writes many orgs); since PostgreSQL refuses
``COPY FROM`` into a table with RLS for any role subject to it, writer *logins* that ingest
need the BYPASSRLS attribute once RLS is on (``create_login(..., bypass_rls=True)``,
superuser only). The table owner is not subject to RLS (no FORCE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlalchemy as sa

from queries.engine import ALL_ORGS_SETTING, ORGS_SETTING
from queries.schema import metadata

READER = "metering_reader"
WRITER = "metering_writer"
_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleSetupError(RuntimeError):
    """The roles cannot be set up (not PostgreSQL, schema missing, unsafe role attributes...)."""


@dataclass
class RolesReport:
    database: str
    schema: str
    reader: str
    writer: str
    created: list[str] = field(default_factory=list)  # roles created by this run
    tables: list[str] = field(default_factory=list)  # tables granted
    rls_tables: list[str] = field(default_factory=list)  # tables with the org policies (rls on)
    rls: bool | None = None  # True enabled, False disabled, None left as it was
    logins: list[str] = field(default_factory=list)  # "name (reader)" ...
    warnings: list[str] = field(default_factory=list)


def app_tables() -> list[sa.Table]:
    return list(metadata.sorted_tables)


def org_tables() -> list[sa.Table]:
    """Tables that carry customer data keyed by ``org`` (the RLS targets)."""
    return [t for t in metadata.sorted_tables if "org" in t.c]


def check_role_name(name: str) -> str:
    if not isinstance(name, str) or not _ROLE_RE.match(name):
        raise RoleSetupError(
            f"role name {str(name)[:70]!r} must be 1-63 characters: lowercase letters, digits, '_' "
            "(not starting with a digit)"
        )
    return name


def reader_policy_sql(table_sql: str, reader: str, quote) -> str:
    """The reader's SELECT policy on one (quoted, qualified) table: its org in metering.orgs, or
    every org when metering.all_orgs is 'on'; no setting, no rows. The settings are read in
    scalar subqueries so PostgreSQL evaluates them once per statement (InitPlan), not per row."""
    return (
        f"CREATE POLICY {quote(_policy_name(reader, 'org_scope'))} ON {table_sql} "
        f"AS PERMISSIVE FOR SELECT TO {quote(reader)} USING ("
        f"(SELECT current_setting('{ALL_ORGS_SETTING}', true)) = 'on' "
        f"OR org = ANY ((SELECT string_to_array(current_setting('{ORGS_SETTING}', true), ','))::text[]))"
    )


def setup_roles(
    engine: sa.Engine,
    *,
    reader: str = READER,
    writer: str = WRITER,
    rls: bool | None = None,
    reader_logins: tuple[str, ...] = (),
    writer_logins: tuple[str, ...] = (),
) -> RolesReport:
    """Create/refresh the two group roles and their grants; ``rls`` True enables the org
    policies, False disables RLS, None leaves it as it is. Runs as the schema owner (who needs
    CREATEROLE, or is a superuser). Logins are created as LOGIN members without a password (set
    one with psql's ``\\password NAME``); existing roles are just made members."""
    if engine.dialect.name != "postgresql":
        raise RoleSetupError(
            f"database roles need PostgreSQL; {engine.dialect.name} has no roles "
            "(protect a SQLite file with file permissions)"
        )
    reader, writer = check_role_name(reader), check_role_name(writer)
    if reader == writer:
        raise RoleSetupError("the reader and writer roles must differ")
    for name in (*reader_logins, *writer_logins):
        check_role_name(name)
        if name in (reader, writer):
            raise RoleSetupError(f"login {name!r} must differ from the group roles")
    q = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        database, schema = conn.execute(sa.text("SELECT current_database(), current_schema()")).one()
        report = RolesReport(database=database, schema=schema, reader=reader, writer=writer)
        existing = {r.table_name for r in conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema})}
        missing = [t.name for t in app_tables() if t.name not in existing]
        if missing:
            raise RoleSetupError(
                f"tables {', '.join(missing)} do not exist in schema {schema!r} of {database!r}: "
                "run `python -m metering init-db` first"
            )
        for role in (reader, writer):
            if _ensure_group_role(conn, role):
                report.created.append(role)

        db, sch = q(database), q(schema)
        # the database and schema: only what each role needs; nobody else by default
        _exec(conn, f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC")
        _exec(conn, f"REVOKE CREATE ON SCHEMA {sch} FROM PUBLIC")
        _exec(conn, f"REVOKE ALL ON DATABASE {db} FROM {q(reader)}")
        _exec(conn, f"GRANT CONNECT ON DATABASE {db} TO {q(reader)}")
        _exec(conn, f"REVOKE ALL ON DATABASE {db} FROM {q(writer)}")
        _exec(conn, f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {q(writer)}")
        for role in (reader, writer):
            _exec(conn, f"REVOKE ALL ON SCHEMA {sch} FROM {q(role)}")
            _exec(conn, f"GRANT USAGE ON SCHEMA {sch} TO {q(role)}")

        names = [t.name for t in app_tables()]
        if "alembic_version" in existing:
            names.append("alembic_version")
        for name in names:
            tbl = f"{sch}.{q(name)}"
            _exec(conn, f"REVOKE ALL ON TABLE {tbl} FROM {q(reader)}, {q(writer)}")
            _exec(conn, f"GRANT SELECT ON TABLE {tbl} TO {q(reader)}")
            if name == "alembic_version":
                _exec(conn, f"GRANT SELECT ON TABLE {tbl} TO {q(writer)}")
            else:
                _exec(conn, f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {tbl} TO {q(writer)}")
            report.tables.append(name)
        _exec(conn, f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {sch} FROM {q(reader)}, {q(writer)}")
        _exec(conn, f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {sch} TO {q(writer)}")

        if rls is True:
            for t in org_tables():
                tbl = f"{sch}.{q(t.name)}"
                for policy in (_policy_name(reader, "org_scope"), _policy_name(writer, "all")):
                    _exec(conn, f"DROP POLICY IF EXISTS {q(policy)} ON {tbl}")
                _exec(conn, reader_policy_sql(tbl, reader, q))
                _exec(conn, f"CREATE POLICY {q(_policy_name(writer, 'all'))} ON {tbl} AS PERMISSIVE "
                      f"FOR ALL TO {q(writer)} USING (true) WITH CHECK (true)")
                _exec(conn, f"ALTER TABLE {tbl} ENABLE ROW LEVEL SECURITY")
                report.rls_tables.append(t.name)
            report.rls = True
        elif rls is False:
            for t in org_tables():
                _exec(conn, f"ALTER TABLE {sch}.{q(t.name)} DISABLE ROW LEVEL SECURITY")
            report.rls = False
        rls_on = rls is True or (rls is None and bool(_rls_tables(conn, schema)))

        for name in reader_logins:
            report.logins.append(f"{name} ({reader}){_ensure_login(conn, name, reader, bypass_rls=False)}")
        for name in writer_logins:
            report.logins.append(f"{name} ({writer}){_ensure_login(conn, name, writer, bypass_rls=rls_on)}")
        report.warnings.extend(_check_members(conn, reader, writer, rls_on))
    return report


def rls_state(engine: sa.Engine) -> dict[str, bool]:
    """table -> row-level security enabled, for the org tables (PostgreSQL)."""
    with engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        on = _rls_tables(conn, schema)
    return {t.name: t.name in on for t in org_tables()}


def drop_roles(engine: sa.Engine, roles: tuple[str, ...]) -> None:
    """Drop roles (group or login) after removing what they hold in this database.

    Roles are cluster-wide: a role still holding privileges in another database cannot be
    dropped until ``DROP OWNED BY`` ran there too."""
    q = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        for role in roles:
            check_role_name(role)
            if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": role}).first():
                _exec(conn, f"DROP OWNED BY {q(role)}")
                _exec(conn, f"DROP ROLE {q(role)}")


def _policy_name(role: str, what: str) -> str:
    return f"{role}_{what}"[:63]


def _exec(conn: sa.Connection, sql: str) -> None:
    conn.exec_driver_sql(sql)


def _ensure_group_role(conn: sa.Connection, role: str) -> bool:
    row = conn.execute(sa.text(
        "SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
        "FROM pg_roles WHERE rolname = :n"), {"n": role}).first()
    q = conn.dialect.identifier_preparer.quote
    if row is None:
        _exec(conn, f"CREATE ROLE {q(role)} NOLOGIN")
        return True
    if row.rolsuper or row.rolbypassrls or row.rolcreaterole or row.rolcreatedb or row.rolcanlogin:
        raise RoleSetupError(
            f"role {role!r} already exists with LOGIN, SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB; "
            "a group role for the app must have none of them (drop it or pick another name)"
        )
    return False


def _ensure_login(conn: sa.Connection, name: str, group: str, *, bypass_rls: bool) -> str:
    """Create (or reuse) a LOGIN role, member of ``group``. ``bypass_rls``: the attribute it
    should have (writer logins while RLS is on). Changing it needs a superuser; otherwise the
    report says what to run."""
    q = conn.dialect.identifier_preparer.quote
    superuser = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
    row = conn.execute(sa.text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :n"),
                       {"n": name}).first()
    if row is not None and row.rolsuper:
        raise RoleSetupError(
            f"login {name!r} is a superuser: no grant or policy limits it; use a plain login")
    attr = "BYPASSRLS" if bypass_rls else "NOBYPASSRLS"
    if row is None:
        _exec(conn, f"CREATE ROLE {q(name)} LOGIN INHERIT" + (f" {attr}" if superuser else ""))
        note = f" created without a password (set one with psql: \\password {name})"
        has_bypass = bool(superuser and bypass_rls)
    else:
        note = " existing role"
        has_bypass = bool(row.rolbypassrls)
        if has_bypass != bypass_rls and superuser:
            _exec(conn, f"ALTER ROLE {q(name)} {attr}")
            has_bypass = bypass_rls
    _exec(conn, f"GRANT {q(group)} TO {q(name)}")
    if has_bypass != bypass_rls:
        note += f"; needs {attr}: run ALTER ROLE {name} {attr} as a superuser"
    elif bypass_rls:
        note += ", BYPASSRLS (ingest COPY under RLS)"
    return note


def _check_members(conn: sa.Connection, reader: str, writer: str, rls_on: bool) -> list[str]:
    rows = conn.execute(sa.text(
        "SELECT g.rolname AS grp, m.rolname AS member, m.rolsuper, m.rolbypassrls "
        "FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member "
        "WHERE g.rolname IN (:r, :w) ORDER BY 1, 2"), {"r": reader, "w": writer}).all()
    out = []
    for r in rows:
        if r.rolsuper:
            out.append(f"{r.member} (member of {r.grp}) is a superuser: grants and RLS do not limit it")
        elif r.grp == reader and r.rolbypassrls:
            out.append(f"{r.member} (member of {r.grp}) has BYPASSRLS: the org policies do not limit it")
        elif r.grp == writer and rls_on and not r.rolbypassrls:
            out.append(f"{r.member} (member of {r.grp}) lacks BYPASSRLS: ingest's COPY into usage_events "
                       "fails while RLS is on (ALTER ROLE ... BYPASSRLS, as a superuser)")
    return out


def _rls_tables(conn: sa.Connection, schema: str) -> set[str]:
    return {r[0] for r in conn.execute(sa.text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :s AND c.relkind = 'r' AND c.relrowsecurity"), {"s": schema})}


__all__ = [
    "READER", "WRITER", "RoleSetupError", "RolesReport", "app_tables", "check_role_name", "drop_roles",
    "org_tables", "rls_state", "setup_roles",
]
