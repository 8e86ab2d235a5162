"""Faults around ingestion and the CLI: an ingest process killed inside its transaction (SIGKILL,
SQLite and PostgreSQL), simultaneous ingests of the same file (PostgreSQL), a live run is never
mistaken for an abandoned one, database down / statement timeout -> exit 2 in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from metering import cli
from metering.ingest import ingest_files
from queries.schema import ingest_runs, quarantine, usage_daily, usage_events
from tests.test_ingest import BASE, assert_rollup_matches_independent_aggregate, synthetic_events, write_csv

ROOT = Path(__file__).resolve().parent.parent

# Runs the real CLI in a subprocess with one change: inside the batch transaction, right after
# the events insert, it writes "<run_id> <backend pid>" to a marker file and sleeps, so the test
# can kill it (SIGKILL) at a known point: events written but not committed.
PAUSED_INGEST = """
import os, sys, time
import queries.store as store

def pause(conn, run_id):
    pid = (conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
           if conn.dialect.name == "postgresql" else os.getpid())
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{run_id} {pid}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)

store.after_events_insert = pause
from metering.cli import main
sys.exit(main(sys.argv[2:]))
"""


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def env() -> dict:
    e = {**os.environ, "PYTHONPATH": str(ROOT)}
    e.pop("METERING_USER", None)
    return e


def scalar(engine, stmt):
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def run_row(engine, run_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(ingest_runs).where(ingest_runs.c.id == run_id)).one()._mapping


def wait_for(path: Path, proc: subprocess.Popen, timeout=90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if proc.poll() is not None:
            raise AssertionError(f"ingest ended early: rc={proc.returncode} {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("ingest never reached the pause point")


def wait_backend_gone(engine, pid: int) -> None:
    if engine.dialect.name != "postgresql":
        return
    for _ in range(200):
        alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p").bindparams(p=pid)
        if not scalar(engine, alive):
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} still alive after its client was killed")


def start_paused(engine, tmp_path, path) -> tuple[subprocess.Popen, int, int]:
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_INGEST, str(marker), "--database-url", url_of(engine), "ingest",
         str(path)],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    run_id, pid = map(int, wait_for(marker, proc).split())
    return proc, run_id, pid


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def counts(engine, run_id=None):
    def n(table, where=None):
        stmt = sa.select(sa.func.count()).select_from(table)
        return scalar(engine, stmt if where is None else stmt.where(where))
    return {
        "events": n(usage_events, None if run_id is None else usage_events.c.ingest_run_id == run_id),
        "daily": n(usage_daily),
        "quarantine": n(quarantine),
    }


def test_ingest_killed_inside_its_transaction_leaves_nothing_and_rerun_converges(engine, tmp_path):
    rows = synthetic_events(20_000, seed=5)
    rows[7] = {**rows[7], "meter": "bogus"}  # one rejected row: the quarantine must not leak either
    path = write_csv(tmp_path / "big.csv", rows)
    proc, run_id, pid = start_paused(engine, tmp_path, path)
    try:
        # paused inside the transaction: the events are written but nobody else can see them
        assert run_row(engine, run_id)["status"] == "running"
        assert counts(engine) == {"events": 0, "daily": 0, "quarantine": 0}
    finally:
        kill(proc)
    wait_backend_gone(engine, pid)
    assert counts(engine) == {"events": 0, "daily": 0, "quarantine": 0}
    assert run_row(engine, run_id)["status"] == "running"  # nobody could mark it: it was killed

    assert cli.main(["--database-url", url_of(engine), "ingest", str(path)]) == 3  # 1 row rejected
    dead = run_row(engine, run_id)
    assert dead["status"] == "failed"
    assert dead["error"].startswith("abandoned: the ingest process ended before its batch committed")
    assert dead["accepted"] == 0 and dead["finished_at"] is not None
    good = [r for i, r in enumerate(rows) if i != 7]
    assert_rollup_matches_independent_aggregate(engine, good)
    unique = len({(r["org"], r["event_id"]) for r in good})
    assert counts(engine)["events"] == unique
    assert counts(engine)["quarantine"] == 1
    # the same as one uninterrupted ingest: a third run adds nothing
    (again,) = ingest_files(engine, [path])
    assert (again.accepted, again.duplicates) == (0, len(good))
    statuses = [r[0] for r in _runs(engine)]
    assert statuses == ["failed", "committed", "committed"]


def _runs(engine):
    with engine.connect() as conn:
        r = ingest_runs.c
        return conn.execute(sa.select(r.status, r.accepted).order_by(r.id)).all()


def test_plain_cli_ingest_killed_as_soon_as_its_run_shows_running(engine, tmp_path):
    """`python -m metering ingest BIG.csv`, killed when its run row appears: wherever it was,
    the file is either not stored at all or stored whole, and a re-run converges."""
    rows = synthetic_events(60_000, seed=6)
    path = write_csv(tmp_path / "big.csv", rows)
    proc = subprocess.Popen([sys.executable, "-m", "metering", "--database-url", url_of(engine), "ingest",
                             str(path)], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not scalar(engine, sa.select(sa.func.count()).select_from(ingest_runs)):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        kill(proc)
    time.sleep(0.3)
    unique = len({(r["org"], r["event_id"]) for r in rows})
    assert counts(engine)["events"] in (0, unique)  # never a partial batch
    assert cli.main(["--database-url", url_of(engine), "ingest", str(path)]) == 0
    assert counts(engine)["events"] == unique
    assert_rollup_matches_independent_aggregate(engine, rows)
    statuses = [s for s, _ in _runs(engine)]
    assert statuses[-1] == "committed" and "running" not in statuses


@pytest.fixture
def pg(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL-only: SQLite has a single writer")  # the sqlite param of `engine`
    return engine


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_two_simultaneous_ingests_of_the_same_file_never_double_count(pg, tmp_path):
    rows = synthetic_events(30_000, seed=7)
    path = write_csv(tmp_path / "same.csv", rows)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def go():
        try:
            barrier.wait()
            results.append(ingest_files(pg, [path])[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    unique = len({(r["org"], r["event_id"]) for r in rows})
    accepted = sorted(r.accepted for r in results)
    assert accepted == [0, unique]  # one run stored everything, the other found only duplicates
    assert sorted(r.duplicates for r in results) == [len(rows) - unique, len(rows)]
    assert [s for s, _ in _runs(pg)] == ["committed", "committed"]
    assert_rollup_matches_independent_aggregate(pg, rows)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_overlapping_files_in_opposite_orders_at_once_neither_deadlock_nor_double_count(pg, tmp_path):
    rows = synthetic_events(20_000, seed=8)
    a = write_csv(tmp_path / "a.csv", rows[:14_000])
    b = write_csv(tmp_path / "b.csv", list(reversed(rows[6_000:])))  # 8k events in both files
    results, errors = [], []
    barrier = threading.Barrier(2)

    def go(p):
        try:
            barrier.wait()
            results.append(ingest_files(pg, [p])[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(p,)) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    unique = {(r["org"], r["event_id"]) for r in rows}
    assert sum(r.accepted for r in results) == len(unique)
    assert scalar(pg, sa.select(sa.func.count()).select_from(usage_events)) == len(unique)
    assert scalar(pg, sa.select(sa.func.sum(usage_daily.c.events))) == len(unique)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_live_run_is_not_reaped_by_a_concurrent_ingest(pg, tmp_path):
    """A run paused inside its transaction holds its lock: another org's ingest, which runs at
    the same time, leaves it `running`; once killed, the next ingest marks it failed."""
    rows = synthetic_events(2_000, seed=9)
    slow = write_csv(tmp_path / "slow.csv", rows)  # orgs acme, beta
    other = write_csv(tmp_path / "other.csv", [{**BASE, "org": "gamma", "event_id": "g1"}])
    proc, run_id, pid = start_paused(pg, tmp_path, slow)
    try:
        (res,) = ingest_files(pg, [other])
        assert res.accepted == 1
        assert run_row(pg, run_id)["status"] == "running"
    finally:
        kill(proc)
    wait_backend_gone(pg, pid)
    (res,) = ingest_files(pg, [other])
    assert res.duplicates == 1
    assert run_row(pg, run_id)["status"] == "failed"
    (res,) = ingest_files(pg, [slow])
    assert res.accepted == len({(r["org"], r["event_id"]) for r in rows})
    assert_rollup_matches_independent_aggregate(pg, rows)


# ---------------------------------------------------------------------------------------------
# database down, statement timeout: exit 2, one line, no traceback


def test_database_down_exits_2_with_one_line(capsys):
    rc = cli.main(["--database-url", "postgresql+psycopg://postgres@127.0.0.1:1/nothing", "summary",
                   "--org", "acme", "--period", "2026-03"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: database unavailable (") and "Traceback" not in err
    assert err.count("\n") == 1


def test_database_unavailable_raised_by_a_query_exits_2(engine, monkeypatch, capsys):
    from metering import invoice
    from queries.engine import DatabaseUnavailable

    def down(*a, **k):
        raise DatabaseUnavailable("server closed the connection unexpectedly")

    monkeypatch.setattr(invoice, "summary_document", down)
    argv = ["--database-url", url_of(engine), "summary", "--org", "acme", "--period", "2026-03"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == ("error: database unavailable (server closed the connection unexpectedly); check "
                   "--database-url or METERING_DATABASE_URL and that the server is running\n")


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_statement_timeout_exits_2_naming_the_timeout(pg, monkeypatch, capsys):
    from metering import invoice

    def slow(engine, *a, **k):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(5)"))

    monkeypatch.setattr(invoice, "summary_document", slow)
    t0 = time.monotonic()
    rc = cli.main(["--database-url", url_of(pg), "--statement-timeout-ms", "200", "summary", "--org", "acme",
                   "--period", "2026-03"])
    assert rc == 2
    assert time.monotonic() - t0 < 4
    err = capsys.readouterr().err
    assert err.startswith("error: database query timed out (") and "statement timeout" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_statement_timeout_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--statement-timeout-ms", "0", "init-db"])
    assert exc.value.code == 2
    assert "must be > 0" in capsys.readouterr().err
