"""Engine creation, schema migration (Alembic, upgrade to head), org-scoped engines and faults.

URLs: writes (CLI, ingest, init-db) use ``METERING_DATABASE_URL``; the app's reads may use a
least-privilege URL, ``METERING_READ_DATABASE_URL`` (falls back to the write URL), see
``database_url(purpose=...)`` and docs/security.md.

Faults: engines made by ``make_engine`` translate driver errors, so callers never import
SQLAlchemy or a driver to understand them: an unreachable database raises
``DatabaseUnavailable``, a statement timeout ``DatabaseTimeout``, a privilege refusal
``DatabasePermissionDenied`` (both subclasses of ``DatabaseUnavailable``). Messages render
URLs without the password.

Org scope (PostgreSQL row-level security, ``queries.roles``): ``scoped_engine(engine, orgs)``
makes every transaction begin with ``set_config('metering.orgs', ..., true)``, a
transaction-local setting, so a pooled connection never carries one caller's scope into the
next transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Collection
from pathlib import Path

import psycopg
import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "metering.db"
ENV_VAR = "METERING_DATABASE_URL"
READ_ENV_VAR = "METERING_READ_DATABASE_URL"

# transaction-local PostgreSQL settings read by the row-level security policies (queries.roles)
ORGS_SETTING = "metering.orgs"
ALL_ORGS_SETTING = "metering.all_orgs"
SCOPE_OPTION = "metering_orgs"
ALL_ORGS = "*all*"  # the execution-option value for "every org" (cannot be an org slug)

# how often (SQLite VM instructions) the statement-timeout check runs
_SQLITE_PROGRESS_STEPS = 100_000


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (down, wrong URL, timeout)."""


class DatabaseTimeout(DatabaseUnavailable):
    """A statement ran longer than the statement timeout (or waited too long for a lock) and was canceled."""


class DatabasePermissionDenied(DatabaseUnavailable):
    """The database role lacks a privilege for the statement (e.g. a write through the read-only URL)."""


def database_url(explicit: str | None = None, *, purpose: str = "write") -> str:
    """The URL to use: explicit argument, then the environment, then the SQLite demo file.

    ``purpose="write"``: ``METERING_DATABASE_URL``. ``purpose="read"``:
    ``METERING_READ_DATABASE_URL`` (e.g. a ``metering_reader`` login), else the write URL.
    """
    if purpose not in ("read", "write"):
        raise ValueError(f"purpose must be 'read' or 'write', not {purpose!r}")
    if explicit:
        return explicit
    if purpose == "read" and os.environ.get(READ_ENV_VAR):
        return os.environ[READ_ENV_VAR]
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def recreate_database(admin_url: str | sa.URL, name: str) -> str:
    """Drop (closing its connections) and create the PostgreSQL database ``name`` on the server of
    ``admin_url``; returns its URL (password kept). For tests, benchmarks and demos."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    q = admin.dialect.identifier_preparer.quote
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {q(name)} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {q(name)}")
    finally:
        admin.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str | sa.URL, name: str) -> None:
    """Drop the PostgreSQL database ``name`` (closing its connections) if it exists."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    q = admin.dialect.identifier_preparer.quote
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {q(name)} WITH (FORCE)")
    finally:
        admin.dispose()


def safe_url(url: str | sa.URL) -> str:
    """The URL for messages: password replaced by ``***``."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is named without its text
        return "<unparsable database URL>"


def make_engine(url: str | None = None, *, statement_timeout_ms: int | None = None) -> sa.Engine:
    """Create an engine for SQLite (WAL, foreign keys) or PostgreSQL (psycopg 3).

    ``statement_timeout_ms`` cancels any single statement running longer: PostgreSQL's
    ``statement_timeout``; on SQLite a progress handler interrupts the statement. Either way
    the caller gets ``DatabaseTimeout``.
    """
    url = database_url(url)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if statement_timeout_ms is not None and int(statement_timeout_ms) <= 0:
        raise ValueError(f"statement_timeout_ms must be > 0, not {statement_timeout_ms!r}")
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseUnavailable(f"database URL is not valid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, parsed, statement_timeout_ms)
    else:
        connect_args = {"connect_timeout": 5}
        if statement_timeout_ms:
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
        engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        sa.event.listen(engine, "begin", _apply_org_scope)
    sa.event.listen(engine, "handle_error", _fault_translator(statement_timeout_ms))
    return engine


def _sqlite_engine(url: str, parsed: sa.URL, statement_timeout_ms: int | None) -> sa.Engine:
    path = parsed.database or ""
    is_uri = path.startswith("file:") or str(parsed.query.get("uri", "")).lower() == "true"
    if path and path != ":memory:" and not is_uri:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                f"SQLite database {path} is unavailable: cannot create its directory "
                f"({exc.strerror or exc})"
            ) from None
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        if statement_timeout_ms:
            info = record.info

            def _over_time() -> int:
                deadline = info.get("metering_deadline")
                return 1 if deadline is not None and time.monotonic() > deadline else 0

            dbapi_conn.set_progress_handler(_over_time, _SQLITE_PROGRESS_STEPS)

    if statement_timeout_ms:
        limit = int(statement_timeout_ms) / 1000

        # armed when a statement starts (its row fetching counts too, as on PostgreSQL),
        # disarmed when the transaction ends or the connection goes back to the pool
        @sa.event.listens_for(engine, "before_cursor_execute")
        def _arm(conn, cursor, statement, parameters, context, executemany):
            conn.info["metering_deadline"] = time.monotonic() + limit

        def _disarm_conn(conn):
            conn.info.pop("metering_deadline", None)

        sa.event.listen(engine, "commit", _disarm_conn)
        sa.event.listen(engine, "rollback", _disarm_conn)

        @sa.event.listens_for(engine, "checkin")
        def _disarm_pool(dbapi_conn, record):
            if record is not None:
                record.info.pop("metering_deadline", None)

    return engine


def _fault_translator(statement_timeout_ms: int | None):
    """A handle_error listener raising DatabaseUnavailable / DatabaseTimeout / DatabasePermissionDenied."""
    timeout = f"{int(statement_timeout_ms)} ms" if statement_timeout_ms else None

    def _translate(ctx: sa.engine.ExceptionContext) -> None:
        if ctx.is_pre_ping:
            return None  # the pool's liveness check decides on reconnecting by itself
        fault = classify_fault(ctx.original_exception, ctx.dialect.name, ctx.is_disconnect, timeout,
                               _where(ctx))
        if fault is not None:
            raise fault
        return None

    return _translate


def _where(ctx: sa.engine.ExceptionContext) -> str:
    engine = ctx.engine
    if engine is None and ctx.connection is not None:
        engine = ctx.connection.engine
    if engine is None:
        return f"the {ctx.dialect.name} database"
    if engine.dialect.name == "sqlite":
        return f"SQLite database {engine.url.database or ':memory:'}"
    return f"PostgreSQL at {safe_url(engine.url)}"


def classify_fault(orig: BaseException, dialect: str, is_disconnect: bool, timeout: str | None,
                   where: str) -> DatabaseUnavailable | None:
    """The exception to raise instead of a driver error, or None to keep SQLAlchemy's."""
    text = _first_line(orig)
    if dialect == "postgresql":
        if isinstance(orig, psycopg.errors.QueryCanceled):
            what = f"the statement timeout ({timeout})" if timeout else "a cancel request"
            return DatabaseTimeout(f"query canceled by {what} on {where}: {text}")
        if isinstance(orig, psycopg.errors.LockNotAvailable):
            return DatabaseTimeout(f"lock wait timed out on {where}: {text}")
        if isinstance(orig, psycopg.errors.InsufficientPrivilege):
            return DatabasePermissionDenied(
                f"permission denied on {where}: {text} (a read-only URL cannot write; "
                "use METERING_DATABASE_URL for writes)"
            )
        if is_disconnect or isinstance(orig, psycopg.OperationalError):
            return DatabaseUnavailable(f"{where} is unavailable: {text}")
        return None
    if dialect == "sqlite" and isinstance(orig, sqlite3.OperationalError):
        low = text.lower()
        if low == "interrupted":
            what = f"the statement timeout ({timeout})" if timeout else "an interrupt"
            return DatabaseTimeout(f"query interrupted by {what} on {where}")
        if "database is locked" in low or "database table is locked" in low:
            return DatabaseTimeout(f"lock wait timed out on {where} (busy timeout 30 s): {text}")
        if "readonly database" in low:
            return DatabasePermissionDenied(f"{where} is read-only: {text}")
        if "unable to open database" in low or "disk i/o error" in low:
            return DatabaseUnavailable(f"{where} is unavailable: {text}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# org scope for row-level security


def scoped_engine(engine: sa.Engine, orgs: Collection[str] | None) -> sa.Engine:
    """The same engine (same pool) whose every transaction carries the org scope ``orgs``.

    ``orgs``: the caller's orgs (``Principal.scope()``); ``None`` = every org. On PostgreSQL each
    transaction then starts with ``set_config('metering.orgs', 'a,b', true)`` (and
    ``metering.all_orgs``), read by the reader role's RLS policies; on SQLite it changes nothing.
    A connection without a scope sees no rows through those policies (fail closed).
    """
    value = ALL_ORGS if orgs is None else scope_value(orgs)
    if engine.dialect.name == "postgresql" and not sa.event.contains(engine, "begin", _apply_org_scope):
        sa.event.listen(engine, "begin", _apply_org_scope)
    return engine.execution_options(**{SCOPE_OPTION: value})


def scope_value(orgs: Collection[str]) -> str:
    """The comma-separated setting for a concrete set of orgs (validated: no comma can sneak in)."""
    from metering.access import check_org_name

    if isinstance(orgs, str):
        raise TypeError("orgs must be a collection of org names, not a string")
    return ",".join(sorted({check_org_name(o) for o in orgs}))


def _apply_org_scope(conn: sa.Connection) -> None:
    value = conn.get_execution_options().get(SCOPE_OPTION)
    if value is None or conn.dialect.name != "postgresql":
        return
    every = value == ALL_ORGS
    conn.exec_driver_sql(
        "SELECT set_config(%(o)s, %(v)s, true), set_config(%(a)s, %(e)s, true)",
        {"o": ORGS_SETTING, "v": "" if every else value,
         "a": ALL_ORGS_SETTING, "e": "on" if every else "off"},
    )


def is_postgres(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


def upgrade(engine: sa.Engine) -> None:
    """Create or upgrade the schema to the newest migration. Idempotent."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
