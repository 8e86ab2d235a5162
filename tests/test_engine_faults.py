"""Database faults reach callers as queries.engine exceptions (no SQLAlchemy or driver types):
unreachable -> DatabaseUnavailable, statement timeout -> DatabaseTimeout, refused write ->
DatabasePermissionDenied; on SQLite and PostgreSQL. Also the read/write URL choice."""

from __future__ import annotations

import socket
import sqlite3
import time

import psycopg
import pytest
import sqlalchemy as sa

from metering.cli import main
from queries.engine import (
    DatabasePermissionDenied,
    DatabaseTimeout,
    DatabaseUnavailable,
    database_url,
    make_engine,
    safe_url,
)


def _count_to(n: int, agg: str = "count(*)") -> str:
    return (f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {n}) "
            f"SELECT {agg} FROM r")


SLOW_SQLITE = _count_to(300_000_000)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _pg_url(pg_engine, **parts) -> str:
    return pg_engine.url.set(**parts).render_as_string(hide_password=False)


# --- timeouts ------------------------------------------------------------------------------


def test_postgres_statement_timeout_raises_database_timeout(pg_engine):
    eng = make_engine(_pg_url(pg_engine), statement_timeout_ms=50)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout) as info, eng.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(1)"))
        assert time.monotonic() - started < 0.9  # canceled, not slept out
        assert "statement timeout (50 ms)" in str(info.value)
        assert isinstance(info.value, DatabaseUnavailable)
        assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
        with eng.connect() as conn:  # the engine is still usable
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        eng.dispose()


def test_sqlite_statement_timeout_interrupts(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 't.db'}", statement_timeout_ms=50)
    started = time.monotonic()
    with pytest.raises(DatabaseTimeout) as info, eng.connect() as conn:
        conn.execute(sa.text(SLOW_SQLITE)).scalar_one()
    assert time.monotonic() - started < 5  # the full count takes far longer
    assert "statement timeout (50 ms)" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_sqlite_timeout_is_per_statement_and_disarmed_after_the_transaction(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 't.db'}", statement_timeout_ms=200)
    small = _count_to(1000)
    with eng.connect() as conn:
        for _ in range(5):  # statements well under the limit, 0.5 s in total: none is interrupted
            assert conn.execute(sa.text(small)).scalar_one() == 1000
            time.sleep(0.1)
        conn.commit()
        time.sleep(0.3)
        # raw driver work after the transaction ended (as ingest's executemany does) is not timed
        cur = conn.connection.driver_connection.cursor()
        assert cur.execute(_count_to(200_000)).fetchone() == (200_000,)
        cur.close()


def test_sqlite_without_timeout_is_not_interrupted(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    with eng.connect() as conn:
        assert conn.execute(sa.text(_count_to(300000, "sum(i)"))).scalar_one() == 300000 * 300001 // 2


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="statement_timeout_ms"):
        make_engine("sqlite://", statement_timeout_ms=0)


# --- unavailable ---------------------------------------------------------------------------


def test_postgres_closed_port_raises_unavailable_without_password():
    eng = make_engine(f"postgresql://metering:s3cret-pw@127.0.0.1:{_closed_port()}/billing")
    with pytest.raises(DatabaseUnavailable) as info, eng.connect():
        pass
    msg = str(info.value)
    assert not isinstance(info.value, DatabaseTimeout)
    assert "s3cret-pw" not in msg and "metering:***@127.0.0.1" in msg
    assert "is unavailable" in msg and "refused" in msg.lower()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def test_postgres_missing_database_raises_unavailable(pg_engine):
    eng = make_engine(_pg_url(pg_engine, database="metering_no_such_db_x"))
    with pytest.raises(DatabaseUnavailable, match="metering_no_such_db_x"), eng.connect():
        pass


def test_postgres_dropped_connection_mid_transaction_is_unavailable(pg_engine):
    eng = make_engine(_pg_url(pg_engine))
    try:
        with eng.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with pg_engine.connect() as admin:
                assert admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
            with pytest.raises(DatabaseUnavailable):
                conn.execute(sa.text("SELECT 1"))
        # the pool's pre-ping is not disturbed by the translation: a new checkout reconnects
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        eng.dispose()


def test_postgres_pre_ping_replaces_a_dead_pooled_connection(pg_engine):
    eng = make_engine(_pg_url(pg_engine))
    try:
        with eng.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as admin:
            assert admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        time.sleep(0.1)
        with eng.connect() as conn:  # no exception: pre-ping noticed and reconnected
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        eng.dispose()


def test_sqlite_directory_as_database_is_unavailable(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}")
    with pytest.raises(DatabaseUnavailable, match="unable to open database file"), eng.connect():
        pass


def test_sqlite_path_under_a_file_is_unavailable(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(DatabaseUnavailable, match="cannot create its directory"):
        make_engine(f"sqlite:///{blocker / 'sub' / 'm.db'}")


def test_sqlite_read_only_missing_file_and_refused_write(tmp_path):
    missing = make_engine(f"sqlite:///file:{tmp_path / 'missing' / 'm.db'}?mode=ro&uri=true")
    with pytest.raises(DatabaseUnavailable, match="unable to open"), missing.connect():
        pass
    assert not (tmp_path / "missing").exists()  # a read-only URI creates nothing
    path = tmp_path / "m.db"
    with make_engine(f"sqlite:///{path}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    ro = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with ro.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 0
    with pytest.raises(DatabasePermissionDenied, match="read-only"), ro.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))


def test_cli_reports_unavailable_in_one_line(capsys):
    url = f"postgresql://ops:hunter2@127.0.0.1:{_closed_port()}/billing"
    assert main(["--database-url", url, "init-roles"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: database unavailable") and len(err.strip().splitlines()) == 1
    assert "hunter2" not in err


# --- URLs ------------------------------------------------------------------------------------


def test_database_url_read_and_write(monkeypatch):
    monkeypatch.delenv("METERING_DATABASE_URL", raising=False)
    monkeypatch.delenv("METERING_READ_DATABASE_URL", raising=False)
    assert database_url(purpose="read").startswith("sqlite:///")
    monkeypatch.setenv("METERING_DATABASE_URL", "postgresql://owner@db/billing")
    assert database_url(purpose="read") == "postgresql://owner@db/billing"  # falls back to the main URL
    monkeypatch.setenv("METERING_READ_DATABASE_URL", "postgresql://app_reader@db/billing")
    assert database_url(purpose="read") == "postgresql://app_reader@db/billing"
    assert database_url() == database_url(purpose="write") == "postgresql://owner@db/billing"
    assert database_url("sqlite:///x.db", purpose="read") == "sqlite:///x.db"  # explicit wins
    with pytest.raises(ValueError, match="purpose"):
        database_url(purpose="admin")


def test_safe_url_hides_the_password():
    assert safe_url("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert safe_url("::not a url::") == "<unparsable database URL>"
