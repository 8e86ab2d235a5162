"""Data freshness and the catalog reads behind it, on SQLite and PostgreSQL, scoped by org."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from metering.freshness import EMPTY, FRESH, STALE, data_freshness, freshness_state
from queries.catalog import last_ingest_run, latest_event_times, restatement_summary
from queries.schema import ingest_runs, quarantine, restatements, usage_events
from queries.usage import UnscopedQuery


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _run(id_, started, status, accepted=0, rejected=0, finished=None, error=None):
    return {"id": id_, "source": f"events-{id_}.jsonl", "started_at": ts(started),
            "finished_at": ts(finished) if finished else None, "status": status,
            "rows_read": accepted + rejected,
            "accepted": accepted, "duplicates": 0, "rejected": rejected, "run_by": "cli", "error": error}


def _event(org, event_id, occurred, run):
    return {"org": org, "event_id": event_id, "occurred_at": ts(occurred), "project": "p", "environment":
            "production", "api_key": "k", "meter": "lookup", "workload": "underwriting", "channel": "api",
            "quantity_micros": 1_000_000, "status": "success", "attempt": 1, "ingest_run_id": run}


def _restated(run, org, period, events, recorded):
    return {"ingest_run_id": run, "org": org, "period": period, "events": events,
            "quantity_micros": events * 1_000_000, "recorded_at": ts(recorded)}


def _fill(engine):
    with engine.begin() as conn:
        conn.execute(ingest_runs.insert(), [
            _run(1, "2026-03-01T00:00Z", "committed", accepted=3, finished="2026-03-01T00:01Z"),
            _run(2, "2026-03-05T00:00Z", "committed", accepted=1, finished="2026-03-05T00:00:30+00:00"),
            _run(3, "2026-03-06T00:00Z", "failed", rejected=2, error="bad file"),
            _run(4, "2026-03-07T00:00Z", "running"),  # touched no org yet: invisible
            _run(5, "2026-03-06T12:00Z", "failed", rejected=1, error="bad row"),  # quarantine only
        ])
        conn.execute(usage_events.insert(), [
            _event("acme", "e1", "2026-02-28T23:59:59+00:00", 1),
            _event("acme", "e2", "2026-03-04T10:00Z", 1),
            _event("acme", "e3", "2026-01-15T00:00Z", 1),
            _event("globex", "e1", "2026-03-05T08:00Z", 2),
        ])
        conn.execute(quarantine.insert(), [
            {"ingest_run_id": 3, "source": "events-3.jsonl", "line_number": n, "org": "acme", "raw": "{}",
             "reason": "bad meter", "created_at": ts("2026-03-06T00:00:01Z")} for n in (1, 2)
        ])
        conn.execute(quarantine.insert(), [
            {"ingest_run_id": 5, "source": "events-5.jsonl", "line_number": 1, "org": "acme", "raw": "{}",
             "reason": "bad meter", "created_at": ts("2026-03-06T12:00:01Z")},
        ])
        conn.execute(restatements.insert(), [
            _restated(1, "acme", "2026-01", 3, "2026-03-01T00:01Z"),
            _restated(3, "acme", "2026-01", 2, "2026-03-06T00:00:02+00:00"),
            _restated(1, "acme", "2026-02", 1, "2026-03-01T00:01Z"),
            _restated(2, "globex", "2026-02", 5, "2026-03-05T00:00:30+00:00"),
        ])


def test_latest_event_times_per_org(engine):
    _fill(engine)
    assert latest_event_times(engine, {"acme", "globex"}) == {
        "acme": ts("2026-03-04T10:00Z"), "globex": ts("2026-03-05T08:00Z"),
    }
    assert latest_event_times(engine, ["acme"]) == {"acme": ts("2026-03-04T10:00Z")}
    assert latest_event_times(engine, ["nobody"]) == {}
    assert all(t.tzinfo is not None for t in latest_event_times(engine, ["acme"]).values())


def test_last_ingest_run_is_scoped_by_what_it_touched(engine):
    _fill(engine)
    acme = last_ingest_run(engine, ["acme"])  # run 5 wrote no events, only quarantined an acme row
    assert (acme.id, acme.status, acme.rejected, acme.error) == (5, "failed", 1, "bad row")
    assert acme.started_at == ts("2026-03-06T12:00Z") and acme.finished_at is None
    globex = last_ingest_run(engine, ["globex"])
    assert (globex.id, globex.status, globex.accepted) == (2, "committed", 1)
    assert globex.finished_at == ts("2026-03-05T00:00:30+00:00")
    assert last_ingest_run(engine, {"acme", "globex"}).id == 5  # run 4 touched nobody
    assert last_ingest_run(engine, ["nobody"]) is None
    with pytest.raises(UnscopedQuery):
        last_ingest_run(engine, "acme")


def test_restatement_summary(engine):
    _fill(engine)
    acme = restatement_summary(engine, ["acme"])
    # 2026-01: runs 1 and 3, 3 + 2 = 5 events; 2026-02: run 1, 1 event; newest period first
    assert acme.select("org", "period", "events", "quantity_micros", "runs").rows() == [
        ("acme", "2026-02", 1, 1_000_000, 1),
        ("acme", "2026-01", 5, 5_000_000, 2),
    ]
    assert acme["first_recorded_at"][1] == ts("2026-03-01T00:01Z")
    assert acme["last_recorded_at"][1] == ts("2026-03-06T00:00:02+00:00")
    both = restatement_summary(engine, ["acme", "globex"])
    assert both.select("org", "period", "events").rows() == [
        ("acme", "2026-02", 1), ("globex", "2026-02", 5), ("acme", "2026-01", 5),
    ]
    assert restatement_summary(engine, []).height == 0


def test_data_freshness_for_an_org(engine):
    _fill(engine)
    f = data_freshness(engine, ["acme"], now=ts("2026-03-06T10:00Z"))
    assert f.latest_event_at == ts("2026-03-04T10:00Z")
    assert f.lag == timedelta(days=2) and f.state == STALE
    assert f.last_run.id == 5 and f.restated_periods == ("2026-02", "2026-01")
    f = data_freshness(engine, ["acme", "globex"], now=ts("2026-03-05T20:00Z"))
    assert f.latest_event_at == ts("2026-03-05T08:00Z") and f.state == FRESH
    empty = data_freshness(engine, ["nobody"], now=ts("2026-03-05T20:00Z"))
    assert (empty.latest_event_at, empty.lag, empty.state, empty.last_run) == (None, None, EMPTY, None)
    assert empty.restated.height == 0 and empty.restated_periods == ()


def test_freshness_state_edges():
    now = ts("2026-03-06T10:00Z")
    assert freshness_state(None, now) == EMPTY
    assert freshness_state(now - timedelta(hours=24), now) == FRESH  # exactly 24h: not older than
    assert freshness_state(now - timedelta(hours=24, seconds=1), now) == STALE
    assert freshness_state(now - timedelta(hours=2), now, stale_after=timedelta(hours=1)) == STALE
    with pytest.raises(ValueError, match="now .* has no UTC offset"):
        freshness_state(now, datetime(2026, 3, 6))  # noqa: DTZ001
