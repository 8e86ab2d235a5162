"""Scoped reads of the catalog and bookkeeping tables: api_keys, latest event time, ingest runs,
restatements. Used by key hygiene (metering/keys.py) and data freshness (metering/freshness.py).

Every function takes ``orgs``, the set of orgs the caller may see; an empty set reads nothing.
Timestamps come back as timezone-aware UTC datetimes on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import sqlalchemy as sa

from queries.schema import api_keys, ingest_runs, quarantine, restatements, usage_events
from queries.usage import UnscopedQuery

API_KEYS_SCHEMA: dict[str, pl.DataType] = {
    "org": pl.String(),
    "api_key": pl.String(),
    "project": pl.String(),
    "environment": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "last_used_at": pl.Datetime("us", "UTC"),
    "revoked_at": pl.Datetime("us", "UTC"),
}

RESTATEMENTS_SCHEMA: dict[str, pl.DataType] = {
    "org": pl.String(),
    "period": pl.String(),
    "events": pl.Int64(),
    "quantity_micros": pl.Int64(),
    "runs": pl.Int64(),
    "first_recorded_at": pl.Datetime("us", "UTC"),
    "last_recorded_at": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class IngestRun:
    """One row of ingest_runs."""

    id: int
    source: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    rows_read: int
    accepted: int
    duplicates: int
    rejected: int
    run_by: str
    error: str | None


def load_api_keys(engine: sa.Engine, orgs: Collection[str]) -> pl.DataFrame:
    """The api_keys rows of the orgs: pl.DataFrame[API_KEYS_SCHEMA], sorted by org, api_key."""
    org_list = _orgs(orgs)
    t = api_keys.c
    stmt = sa.select(*[getattr(t, c) for c in API_KEYS_SCHEMA]).where(t.org.in_(org_list))
    with engine.connect() as conn:
        rows = [tuple(_utc(v) if isinstance(v, datetime) else v for v in r) for r in conn.execute(stmt)]
    return pl.DataFrame(rows, schema=API_KEYS_SCHEMA, orient="row").sort("org", "api_key")


def latest_event_times(engine: sa.Engine, orgs: Collection[str]) -> dict[str, datetime]:
    """Newest ``occurred_at`` per org (orgs without events are absent)."""
    org_list = _orgs(orgs)
    t = usage_events.c
    stmt = sa.select(t.org, sa.func.max(t.occurred_at)).where(t.org.in_(org_list)).group_by(t.org)
    with engine.connect() as conn:
        return {org: _utc(ts) for org, ts in conn.execute(stmt) if ts is not None}


def last_ingest_run(engine: sa.Engine, orgs: Collection[str]) -> IngestRun | None:
    """The most recently started ingest run that touched the orgs, or None.

    A run touched an org if it wrote one of its events, quarantined one of its rows or recorded a
    restatement for it (ingest_runs has no org column; a run that wrote nothing for any visible
    org, e.g. one that failed before reading, is not visible to an org-scoped caller).
    """
    org_list = _orgs(orgs)
    r = ingest_runs.c
    touched = sa.or_(
        sa.exists().where(usage_events.c.ingest_run_id == r.id, usage_events.c.org.in_(org_list)),
        sa.exists().where(quarantine.c.ingest_run_id == r.id, quarantine.c.org.in_(org_list)),
        sa.exists().where(restatements.c.ingest_run_id == r.id, restatements.c.org.in_(org_list)),
    )
    stmt = (
        sa.select(r.id, r.source, r.started_at, r.finished_at, r.status, r.rows_read, r.accepted,
                  r.duplicates, r.rejected, r.run_by, r.error)
        .where(touched)
        .order_by(r.started_at.desc(), r.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return IngestRun(
        id=int(row.id), source=row.source, started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at) if row.finished_at is not None else None,
        status=row.status, rows_read=int(row.rows_read), accepted=int(row.accepted),
        duplicates=int(row.duplicates), rejected=int(row.rejected), run_by=row.run_by, error=row.error,
    )


def restatement_summary(engine: sa.Engine, orgs: Collection[str]) -> pl.DataFrame:
    """Periods restated by late events, per org and period: pl.DataFrame[RESTATEMENTS_SCHEMA]
    (events and quantity summed over runs, number of runs, first/last recorded), newest period first.
    """
    org_list = _orgs(orgs)
    t = restatements.c
    stmt = (
        sa.select(
            t.org, t.period,
            sa.func.sum(t.events), sa.func.sum(t.quantity_micros),
            sa.func.count(sa.distinct(t.ingest_run_id)),
            sa.func.min(t.recorded_at), sa.func.max(t.recorded_at),
        )
        .where(t.org.in_(org_list))
        .group_by(t.org, t.period)
    )
    with engine.connect() as conn:
        rows = [
            (org, period, int(ev), int(q), int(runs), _utc(first), _utc(last))
            for org, period, ev, q, runs, first, last in conn.execute(stmt)
        ]
    return pl.DataFrame(rows, schema=RESTATEMENTS_SCHEMA, orient="row").sort(
        ["period", "org"], descending=[True, False]
    )


def _orgs(orgs: Collection[str]) -> list[str]:
    if orgs is None or isinstance(orgs, str):
        raise UnscopedQuery("every read needs the collection of orgs the caller may see")
    return sorted(set(orgs))


def _utc(value: datetime | str) -> datetime:
    """SQLite hands back naive (UTC) datetimes or strings; PostgreSQL aware ones."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
