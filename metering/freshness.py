"""Data freshness: how current the numbers on screen are, scoped to the orgs the caller may see.

Latest event time (overall and per org), the last ingest run that touched those orgs, and the
billing periods restated by late events (from the restatements table). Reads go through
queries/catalog.py; ``freshness_state`` is the pure rule the app and CLI share.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import sqlalchemy as sa

from queries.catalog import IngestRun, last_ingest_run, latest_event_times, restatement_summary

FRESH = "fresh"
STALE = "stale"
EMPTY = "empty"
DEFAULT_STALE_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class Freshness:
    """Freshness of the orgs' data as of ``now``.

    ``latest_event_at``: newest event over the orgs (None without events); ``per_org``: newest event
    per org; ``lag``: now - latest_event_at; ``state``: fresh | stale | empty (see freshness_state);
    ``last_run``: the newest ingest run that touched the orgs; ``restated``: pl.DataFrame[org,
    period, events, quantity_micros, runs, first_recorded_at, last_recorded_at], newest period first.
    """

    now: datetime
    latest_event_at: datetime | None
    per_org: dict[str, datetime]
    lag: timedelta | None
    state: str
    last_run: IngestRun | None
    restated: pl.DataFrame

    @property
    def restated_periods(self) -> tuple[str, ...]:
        """Distinct restated periods, newest first."""
        return tuple(self.restated["period"].unique().sort(descending=True).to_list())


def data_freshness(
    engine: sa.Engine,
    orgs: Collection[str],
    now: datetime | None = None,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> Freshness:
    """Read latest event times, the last ingest run and restatements for the orgs."""
    now = _aware(now or datetime.now(UTC), "now")
    per_org = latest_event_times(engine, orgs)
    latest = max(per_org.values()) if per_org else None
    return Freshness(
        now=now,
        latest_event_at=latest,
        per_org=per_org,
        lag=(now - latest) if latest else None,
        state=freshness_state(latest, now, stale_after),
        last_run=last_ingest_run(engine, orgs),
        restated=restatement_summary(engine, orgs),
    )


def freshness_state(
    latest: datetime | None, now: datetime, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> str:
    """``empty`` without events, ``stale`` when the newest event is older than ``stale_after``
    before ``now``, else ``fresh``."""
    if latest is None:
        return EMPTY
    return STALE if _aware(now, "now") - _aware(latest, "latest") > stale_after else FRESH


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} {value.isoformat()} has no UTC offset")
    return value.astimezone(UTC)
