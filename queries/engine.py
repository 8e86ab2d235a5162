"""Engine creation and schema migration (Alembic, upgrade to head)."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "metering.db"
ENV_VAR = "METERING_DATABASE_URL"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (down, wrong URL, timeout)."""


def database_url(explicit: str | None = None) -> str:
    """The URL to use: explicit argument, then METERING_DATABASE_URL, then the SQLite demo file."""
    if explicit:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def make_engine(url: str | None = None, *, statement_timeout_ms: int | None = None) -> sa.Engine:
    """Create an engine for SQLite (WAL, foreign keys) or PostgreSQL (psycopg 3)."""
    url = database_url(url)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args = {"connect_timeout": 5}
    if statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


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
