"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is never skipped: if it is unreachable the tests error (CI starts it first).
Set METERING_TEST_PG_URL to point elsewhere (default: a database `metering_test` on
127.0.0.1:5432 as user postgres, created on first use).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queries.engine import make_engine, recreate_database, upgrade  # noqa: E402
from queries.schema import metadata  # noqa: E402

PG_ADMIN_URL = os.environ.get("METERING_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DB = os.environ.get(
    "METERING_TEST_PG_DB", f"metering_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
)


def _pg_url() -> str:
    if os.environ.get("METERING_TEST_PG_URL"):
        return os.environ["METERING_TEST_PG_URL"]
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB


@pytest.fixture(scope="session")
def pg_engine():
    url = _pg_url()
    if not os.environ.get("METERING_TEST_PG_URL"):
        recreate_database(PG_ADMIN_URL, PG_DB)
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _truncate(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
        else:
            for t in reversed(metadata.sorted_tables):
                conn.execute(t.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """A migrated, empty database: SQLite file or the PostgreSQL test database."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'metering.db'}")
        upgrade(eng)
        yield eng
        eng.dispose()
    else:
        eng = request.getfixturevalue("pg_engine")
        _truncate(eng)
        yield eng


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: PostgreSQL and Chromium must really run."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; skipped tests fail CI", red=True)
        session.exitstatus = 1


def _demo_db(url: str) -> str:
    from metering.cli import main

    assert main(["--database-url", url, "init-db"]) == 0
    assert main(["--database-url", url, "demo", "--days", "240", "--events", "60000", "--seed", "11"]) == 0
    return url


@pytest.fixture(scope="session")
def demo_sqlite_url(tmp_path_factory) -> str:
    """A small demo database (SQLite file), shared by the app and browser tests."""
    return _demo_db(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}")


@pytest.fixture(scope="session")
def demo_pg_url() -> str:
    """The same small demo in its own PostgreSQL database."""
    return _demo_db(recreate_database(PG_ADMIN_URL, PG_DB + "_demo"))


@pytest.fixture(scope="session")
def demo_period() -> str:
    from metering.periods import period_of, utcnow

    return period_of(utcnow())
