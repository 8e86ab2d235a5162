"""queries.store: run bookkeeping and the Data page reads (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest
import sqlalchemy as sa

import queries.store
from metering.ingest import EVENT_FIELDS, ingest_files
from queries.store import ingest_runs, quarantine_rows, restated_periods
from queries.usage import UnscopedQuery, load_usage

BASE = {
    "event_id": "ev-1", "occurred_at": "2026-03-10T12:00:00Z", "org": "acme", "project": "proj-a",
    "environment": "production", "api_key": "key-1", "meter": "lookup", "workload": "underwriting",
    "channel": "api", "quantity": "1", "status": "success", "attempt": "1",
}
NOW = datetime(2026, 4, 15, 9, 0, tzinfo=UTC)


def write_csv(path, rows):
    schema = {c: pl.String for c in EVENT_FIELDS}
    data = [{c: r.get(c) for c in EVENT_FIELDS} for r in rows]
    pl.DataFrame(data, schema=schema, orient="row").write_csv(path)
    return path


def test_ingest_runs_newest_first_with_counts(engine, tmp_path, monkeypatch):
    a = write_csv(tmp_path / "a.csv", [BASE, {**BASE, "event_id": "x", "meter": "nope"}, BASE])
    b = write_csv(tmp_path / "b.csv", [{**BASE, "event_id": "ev-2"}])
    ingest_files(engine, [a], now=NOW, run_by="alice")

    def crash(conn, run_id):
        raise RuntimeError("disk full")

    monkeypatch.setattr(queries.store, "after_events_insert", crash)
    with pytest.raises(RuntimeError):
        ingest_files(engine, [b], now=NOW, run_by="bob")
    runs = ingest_runs(engine)
    cols = ("source", "status", "rows_read", "accepted", "duplicates", "rejected", "run_by")
    assert runs.select(cols).rows() == [
        (str(b), "failed", 0, 0, 0, 0, "bob"),
        (str(a), "committed", 3, 1, 1, 1, "alice"),
    ]
    assert runs["error"].to_list() == ["RuntimeError: disk full", None]
    assert runs["started_at"].to_list() == [NOW, NOW]
    assert runs.schema["started_at"] == pl.Datetime("us", "UTC")
    assert all(f >= NOW for f in runs["finished_at"].to_list())
    assert ingest_runs(engine, limit=1).height == 1


def test_quarantine_rows_are_scoped_by_org(engine, tmp_path):
    rows = [
        {**BASE, "event_id": "ok"},
        {**BASE, "event_id": "a-bad", "meter": "nope"},
        {**BASE, "event_id": "b-bad", "org": "beta", "quantity": "-3"},
        {**BASE, "event_id": "no-org", "org": ""},
        {**BASE, "event_id": "bad-org", "org": "Not A Slug"},
    ]
    (result,) = ingest_files(engine, [write_csv(tmp_path / "q.csv", rows)], now=NOW)
    acme = quarantine_rows(engine, ["acme"])
    assert acme.select("line_number", "org", "reason").rows() == [
        (3, "acme", "meter: 'nope' is not one of lookup, expanded_history, report_job, export_records, "
                    "webhook_delivery, assisted_review")]
    assert acme["ingest_run_id"].to_list() == [result.run_id]
    assert acme["created_at"].to_list() == [NOW]
    assert quarantine_rows(engine, ["beta"])["line_number"].to_list() == [4]
    assert quarantine_rows(engine, []).height == 0
    # unscoped rows: org missing, or naming no known organization ("beta" had no accepted event)
    with_unscoped = quarantine_rows(engine, ["acme"], include_unscoped=True)
    assert sorted(with_unscoped["line_number"].to_list()) == [3, 4, 5, 6]
    assert quarantine_rows(engine, ["acme"], run_id=result.run_id + 1).height == 0
    with pytest.raises(UnscopedQuery):
        quarantine_rows(engine, None)


def test_restated_periods_sum_over_runs_and_are_scoped(engine, tmp_path):
    first = write_csv(tmp_path / "a.csv", [
        {**BASE, "event_id": "1", "occurred_at": "2026-03-02T00:00:00Z", "quantity": "2"},
        {**BASE, "event_id": "2", "occurred_at": "2026-02-02T00:00:00Z"},
        {**BASE, "event_id": "3", "org": "beta", "occurred_at": "2026-03-02T00:00:00Z"},
    ])
    second = write_csv(tmp_path / "b.csv", [
        {**BASE, "event_id": "4", "occurred_at": "2026-03-31T23:00:00-05:00", "quantity": "5"},  # April UTC
        {**BASE, "event_id": "5", "occurred_at": "2026-03-31T18:00:00-05:00", "quantity": "0.5"},
    ])
    ingest_files(engine, [first], now=NOW)
    later = datetime(2026, 4, 20, tzinfo=UTC)
    ingest_files(engine, [second], now=later)
    got = restated_periods(engine, ["acme"])
    assert got.select("org", "period", "events", "quantity_micros", "runs").rows() == [
        ("acme", "2026-02", 1, 1_000_000, 1),
        ("acme", "2026-03", 2, 2_500_000, 2),
    ]
    assert got["last_recorded_at"].to_list() == [NOW, later]
    assert restated_periods(engine, ["beta"])["events"].to_list() == [1]
    assert restated_periods(engine, ["gamma"]).height == 0
    with pytest.raises(UnscopedQuery):
        restated_periods(engine, "acme")


def test_utc_day_does_not_depend_on_the_postgres_session_time_zone(engine, tmp_path):
    """A PostgreSQL session in another time zone must still bucket by the UTC day."""
    if engine.dialect.name == "postgresql":
        target = sa.create_engine(engine.url, connect_args={"options": "-c timezone=Pacific/Kiritimati"})
    else:
        target = engine
    path = write_csv(tmp_path / "e.csv", [
        {**BASE, "event_id": "a", "occurred_at": "2026-03-31T23:30:00Z"},
        {**BASE, "event_id": "b", "occurred_at": "2026-04-01T00:10:00+14:00"},  # 2026-03-31 10:10 UTC
    ])
    try:
        ingest_files(target, [path], now=NOW)
    finally:
        if target is not engine:
            target.dispose()
    days = load_usage(engine, ["acme"]).group_by("day").agg(pl.col("events").sum()).rows()
    assert days == [(date(2026, 3, 31), 2)]
