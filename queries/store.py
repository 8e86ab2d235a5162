"""Writes of ingestion (events, rollup, keys, quarantine, restatements, runs) and the reads of
ingest runs, quarantine and restatements for the app's Data page.

One batch = one transaction: events insert (idempotent on (org, event_id)), daily-rollup upsert
from the events this run inserted, org/project/api-key upserts, restatements for late events,
quarantine rows, and the run row set to ``committed``. The run row itself is written as
``running`` first in its own small transaction, and set to ``failed`` (with the error) if the
batch fails, so a crash leaves no half-written batch but a visible failed run.

A process killed mid-batch (SIGKILL, power loss) cannot mark its run: its transaction is rolled
back by the database, and the next batch marks such abandoned ``running`` rows ``failed``. On
PostgreSQL a run is *live* while its process holds a session advisory lock on the run id
(taken in the same transaction that makes the row visible, released when the connection dies);
on SQLite the next batch holds the database write lock, so no other batch is mid-transaction.

Concurrent batches on PostgreSQL take a transaction-level advisory lock per org of the batch
(in one global order, so two batches never deadlock): batches sharing an org run one after the
other, each sees the other's committed events and counts them as duplicates. SQLite has one
writer at a time anyway (busy timeout 30 s).

PostgreSQL bulk-loads with psycopg COPY into a temporary staging table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``; SQLite uses executemany of
``INSERT ... ON CONFLICT DO NOTHING``. Timestamps are stored in UTC on both (SQLite: text
``YYYY-MM-DD HH:MM:SS.ffffff``, the format SQLAlchemy reads back).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from metering.domain import WEBHOOK_METER
from queries.schema import (
    ROLLUP_KEY,
    TS,
    api_keys,
    organizations,
    projects,
    quarantine,
    restatements,
    usage_daily,
    usage_events,
)
from queries.schema import ingest_runs as runs_table
from queries.usage import UnscopedQuery

EVENT_COLUMNS = (
    "event_id", "occurred_at", "org", "project", "environment", "api_key", "meter", "workload",
    "channel", "quantity_micros", "status", "attempt",
)
CHUNK_ROWS = 100_000
# When every event of a batch is new (the usual case), the rollup, keys and restatements are
# computed from the batch frame; otherwise (some were already stored) in SQL from the rows this
# run inserted. Tests switch this off to check both give the same tables.
DERIVE_FROM_FRAME = True
# pg_advisory locks (two-int form): namespace of per-org ingest locks, and of per-run liveness locks
ORG_LOCK_CLASS = 0x4D45  # "ME"
RUN_LOCK_CLASS = 0x4D52  # "MR"
ABANDONED = "abandoned: the ingest process ended before its batch committed; nothing of it was stored"


@dataclass(frozen=True)
class BatchCounts:
    run_id: int
    accepted: int
    duplicates: int


def after_events_insert(conn: sa.Connection, run_id: int) -> None:
    """Test seam: called inside the batch transaction between the events insert and the rollup
    upsert. Tests monkeypatch it to raise and simulate a crash mid-batch."""


def store_batch(
    engine: sa.Engine,
    events: pl.DataFrame,
    rejected: pl.DataFrame,
    *,
    source: str,
    now: datetime,
    run_by: str,
    rows_read: int,
    in_file_duplicates: int = 0,
    on_progress: Callable[[int], object] | None = None,
) -> BatchCounts:
    """Store one batch of validated events (unique per (org, event_id), columns EVENT_COLUMNS,
    occurred_at a UTC Datetime) and its rejected rows (line_number, org, raw, reason)."""
    now = _utc(now)
    with _live_run(engine, source, run_by, now) as run_id:
        return _store_batch(engine, run_id, events, rejected, source=source, now=now, rows_read=rows_read,
                            in_file_duplicates=in_file_duplicates, on_progress=on_progress)


def _store_batch(engine, run_id, events, rejected, *, source, now, rows_read, in_file_duplicates,
                 on_progress) -> BatchCounts:
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # the rollup/key aggregates over a whole file must not spill to disk
                conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
                lock_orgs(conn, events["org"].unique().to_list() if events.height else [])
            # SQLite: this UPDATE is the transaction's first write, so it takes the write lock
            reap_abandoned_runs(conn, run_id)
            _insert_events(conn, events, run_id, on_progress)
            accepted = conn.execute(
                sa.select(sa.func.count()).select_from(usage_events)
                .where(usage_events.c.ingest_run_id == run_id)
            ).scalar_one()
            after_events_insert(conn, run_id)
            if accepted and accepted == events.height and DERIVE_FROM_FRAME:
                # every event of the batch was new: derive rollup, keys and restatements from the
                # frame in Polars instead of re-reading a whole file's rows in SQL
                _derive_from_frame(conn, events, run_id, now)
            elif accepted:
                _upsert_rollup(conn, run_id)
                _upsert_orgs_projects_keys(conn, run_id)
                _record_restatements(conn, run_id, now)
            _insert_quarantine(conn, rejected, run_id, source, now)
            duplicates = in_file_duplicates + events.height - accepted
            conn.execute(
                runs_table.update().where(runs_table.c.id == run_id).values(
                    status="committed", finished_at=_utc(datetime.now(UTC)), rows_read=rows_read,
                    accepted=accepted, duplicates=duplicates, rejected=rejected.height, error=None,
                )
            )
    except BaseException as exc:
        fail_run(engine, run_id, f"{type(exc).__name__}: {exc}")
        raise
    return BatchCounts(run_id=run_id, accepted=int(accepted), duplicates=int(duplicates))


@contextmanager
def _live_run(engine: sa.Engine, source: str, run_by: str, now: datetime) -> Iterator[int]:
    """A ``running`` run row for the duration of the block. On PostgreSQL a dedicated connection
    holds a session advisory lock on the run id from the moment the row becomes visible (same
    transaction) until the block ends or the process dies: that is how a later batch tells a
    live run from an abandoned one."""
    if engine.dialect.name != "postgresql":
        yield start_run(engine, source, run_by, now)
        return
    with engine.connect() as holder:
        with holder.begin():
            run_id = _insert_run(holder, source, run_by, now)
            holder.execute(sa.select(sa.func.pg_advisory_lock(RUN_LOCK_CLASS, run_id)))
        try:
            yield run_id
        finally:
            try:
                holder.execute(sa.select(sa.func.pg_advisory_unlock(RUN_LOCK_CLASS, run_id)))
                holder.commit()
            except sa.exc.DBAPIError:  # connection lost: never return a lock-holding one to the pool
                holder.invalidate()


def lock_orgs(conn: sa.Connection, orgs: Collection[str]) -> None:
    """PostgreSQL: transaction-level advisory lock per org, in ascending key order (no deadlock
    between batches sharing orgs). Two orgs may share a key (hashtext): that only serializes more."""
    if not orgs:
        return
    keys = conn.execute(
        sa.text("SELECT DISTINCT hashtext(o) AS k FROM unnest(CAST(:orgs AS text[])) AS o ORDER BY k"),
        {"orgs": sorted(set(orgs))},
    ).scalars().all()
    for key in keys:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ORG_LOCK_CLASS, key)))


def reap_abandoned_runs(conn: sa.Connection, own_run_id: int) -> list[int]:
    """Mark ``running`` runs whose process is gone as ``failed`` (their batch transaction was
    rolled back by the database, so nothing of them is stored). Returns their ids."""
    r = runs_table.c
    others = sa.and_(r.status == "running", r.id != own_run_id)
    if conn.dialect.name == "postgresql":
        candidates = conn.execute(sa.select(r.id).where(others).order_by(r.id)).scalars().all()
        # a live run's process holds its lock; getting it (released at commit) means nobody does
        dead = [rid for rid in candidates
                if conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(RUN_LOCK_CLASS, rid))).scalar()]
        if not dead:
            return []
        where = sa.and_(others, r.id.in_(dead))
    else:
        # the caller holds the SQLite write lock: no other batch transaction is in progress
        where = others
    reaped = conn.execute(
        runs_table.update().where(where).values(
            status="failed", finished_at=_utc(datetime.now(UTC)),
            error=f"{ABANDONED} (found by run {own_run_id})",
        ).returning(r.id)
    ).scalars().all()
    return sorted(reaped)


def start_run(engine: sa.Engine, source: str, run_by: str, now: datetime) -> int:
    """Write the ``running`` ingest_runs row in its own transaction; returns its id."""
    with engine.begin() as conn:
        return _insert_run(conn, source, run_by, now)


def _insert_run(conn: sa.Connection, source: str, run_by: str, now: datetime) -> int:
    result = conn.execute(
        runs_table.insert().values(
            source=source[:1000], started_at=_utc(now), status="running", run_by=run_by[:200]
        )
    )
    return int(result.inserted_primary_key[0])


def fail_run(engine: sa.Engine, run_id: int, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            runs_table.update().where(runs_table.c.id == run_id).values(
                status="failed", finished_at=_utc(datetime.now(UTC)), error=error[:10_000]
            )
        )


def ingest_runs(engine: sa.Engine, limit: int = 50) -> pl.DataFrame:
    """The newest ingest runs, newest first (id, source, started_at, finished_at, status,
    rows_read, accepted, duplicates, rejected, run_by, error). Runs hold file names and counts
    only, no org data, so this read is not org-scoped."""
    stmt = sa.select(*[runs_table.c[n] for n in _RUN_SCHEMA]).order_by(runs_table.c.id.desc())
    return _frame(engine, stmt.limit(int(limit)), _RUN_SCHEMA)


def quarantine_rows(
    engine: sa.Engine,
    orgs: Collection[str],
    limit: int = 500,
    *,
    include_unscoped: bool = False,
    run_id: int | None = None,
) -> pl.DataFrame:
    """Rejected rows whose org (as read) is one of ``orgs``, newest first. Rows whose org was
    missing or names no known organization are visible only with ``include_unscoped=True``."""
    _check_orgs(orgs)
    q = quarantine.c
    visible = q.org.in_(sorted(set(orgs)))
    if include_unscoped:
        known = sa.select(organizations.c.org)
        visible = sa.or_(visible, q.org.is_(None), q.org.not_in(known))
    stmt = sa.select(
        q.id, q.ingest_run_id, q.source, q.line_number, q.org, q.raw, q.reason, q.created_at
    ).where(visible)
    if run_id is not None:
        stmt = stmt.where(q.ingest_run_id == run_id)
    stmt = stmt.order_by(q.id.desc()).limit(int(limit))
    return _frame(engine, stmt, _QUARANTINE_SCHEMA)


def restated_periods(engine: sa.Engine, orgs: Collection[str]) -> pl.DataFrame:
    """Per (org, period): late events accepted after the period had closed, their quantity, how
    many ingest runs brought them and when the last one was recorded."""
    _check_orgs(orgs)
    r = restatements.c
    stmt = (
        sa.select(
            r.org, r.period,
            sa.func.sum(r.events).label("events"),
            sa.func.sum(r.quantity_micros).label("quantity_micros"),
            sa.func.count(sa.distinct(r.ingest_run_id)).label("runs"),
            sa.func.max(r.recorded_at).label("last_recorded_at"),
        )
        .where(r.org.in_(sorted(set(orgs))))
        .group_by(r.org, r.period)
    )
    return _frame(engine, stmt, _RESTATED_SCHEMA).sort(["org", "period"])


# ---------------------------------------------------------------------------------------------
# batch steps


def _insert_events(conn: sa.Connection, events: pl.DataFrame, run_id: int, on_progress) -> None:
    if events.is_empty():
        return
    if conn.dialect.name == "postgresql":
        _copy_events_postgres(conn, events, run_id, on_progress)
    else:
        _executemany_events_sqlite(conn, events, run_id, on_progress)


def _copy_events_postgres(conn: sa.Connection, events: pl.DataFrame, run_id: int, on_progress) -> None:
    """COPY straight into usage_events under a savepoint (the usual case: every event is new);
    if one (org, event_id) is already stored, roll back to the savepoint and load through a
    staging table with ON CONFLICT DO NOTHING instead."""
    text = events.select(
        *[pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00") if c == "occurred_at" else pl.col(c)
          for c in EVENT_COLUMNS],
        pl.lit(run_id, pl.Int64).alias("ingest_run_id"),
    )
    savepoint = conn.begin_nested()
    try:
        _copy_frame(conn, usage_events.name, text, on_progress)
    except psycopg.errors.UniqueViolation:
        savepoint.rollback()
    else:
        savepoint.commit()
        return
    staging = sa.Table(
        "ingest_staging",
        sa.MetaData(),
        *[sa.Column(c.name, c.type) for c in usage_events.c if c.name in EVENT_COLUMNS],
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    staging.create(conn)
    _copy_frame(conn, staging.name, text.drop("ingest_run_id"), None)
    s = staging.c
    conn.execute(
        postgresql.insert(usage_events)
        .from_select([*EVENT_COLUMNS, "ingest_run_id"],
                     sa.select(*[s[c] for c in EVENT_COLUMNS], sa.literal(run_id, sa.Integer)))
        .on_conflict_do_nothing(index_elements=["org", "event_id"])
    )


def _executemany_events_sqlite(conn: sa.Connection, events: pl.DataFrame, run_id: int, on_progress) -> None:
    stmt = sqlite.insert(usage_events).on_conflict_do_nothing(index_elements=["org", "event_id"])
    compiled = stmt.compile(dialect=conn.dialect, column_keys=[*EVENT_COLUMNS, "ingest_run_id"])
    order = list(compiled.positiontup)
    rows = events.with_columns(
        pl.col("occurred_at").dt.strftime("%Y-%m-%d %H:%M:%S%.6f"),
        pl.lit(run_id, pl.Int64).alias("ingest_run_id"),
    ).select(order)
    cur = conn.connection.driver_connection.cursor()
    try:
        for chunk in rows.iter_slices(CHUNK_ROWS):
            cur.executemany(str(compiled), chunk.iter_rows())
            if on_progress:
                on_progress(chunk.height)
    finally:
        cur.close()


def _derive_from_frame(conn: sa.Connection, events: pl.DataFrame, run_id: int, now: datetime) -> None:
    """Rollup upsert, org/project/key upserts and restatements computed from the batch frame;
    same results as the SQL steps when every event of the frame was inserted by this run."""
    insert = _dialect_insert(conn)
    ts = pl.col("occurred_at")
    eligible = (pl.col("status") == "success") & (
        (pl.col("meter") != WEBHOOK_METER) | (pl.col("attempt") == 1)
    )
    rollup = (
        events.with_columns(ts.dt.date().alias("day"), (pl.col("attempt") > 1).alias("retry"))
        .group_by(list(ROLLUP_KEY))
        .agg(eligible.first().alias("eligible"), pl.col("quantity_micros").sum(), pl.len().alias("events"))
        .select(*ROLLUP_KEY, "eligible", "quantity_micros", pl.col("events").cast(pl.Int64))
    )
    d = usage_daily.c
    _bulk_upsert(
        conn, usage_daily, rollup, list(ROLLUP_KEY),
        lambda ex: {"quantity_micros": d.quantity_micros + ex.quantity_micros, "events": d.events + ex.events,
                    "eligible": ex.eligible},
    )
    orgs = events.group_by("org").agg(ts.min().alias("created_at")).sort("org")
    conn.execute(insert(organizations).on_conflict_do_nothing(index_elements=["org"]), orgs.to_dicts())
    projs = events.group_by("org", "project").agg(ts.min().alias("created_at")).sort("org", "project")
    conn.execute(insert(projects).on_conflict_do_nothing(index_elements=["org", "project"]), projs.to_dicts())
    keys = (
        events.sort("occurred_at", "event_id")
        .group_by("org", "api_key")
        .agg(pl.col("project").first(), pl.col("environment").first(),
             ts.min().alias("created_at"), ts.max().alias("last_used_at"))
        .sort("org", "api_key")
    )
    conn.execute(_api_keys_upsert(conn, insert(api_keys)), keys.to_dicts())
    period_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    late = (
        events.filter(ts < period_start)
        .group_by("org", ts.dt.strftime("%Y-%m").alias("period"))
        .agg(pl.len().cast(pl.Int64).alias("events"), pl.col("quantity_micros").sum())
        .sort("org", "period")
        .with_columns(pl.lit(run_id).alias("ingest_run_id"))
    )
    if late.height:
        rows = late.to_dicts()
        for row in rows:
            row["recorded_at"] = now
        conn.execute(restatements.insert(), rows)


def _bulk_upsert(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame, key: list[str], set_of) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET set_of(excluded) for a whole frame: COPY into a
    staging table then one INSERT ... SELECT on PostgreSQL, executemany on SQLite."""
    if frame.is_empty():
        return
    cols = frame.columns
    if conn.dialect.name == "postgresql":
        staging = sa.Table(
            f"{table.name}_staging", sa.MetaData(),
            *[sa.Column(c, table.c[c].type) for c in cols],
            prefixes=["TEMPORARY"], postgresql_on_commit="DROP",
        )
        staging.create(conn)
        _copy_frame(conn, staging.name, frame, None)
        ins = postgresql.insert(table).from_select(cols, sa.select(*[staging.c[c] for c in cols]))
        conn.execute(ins.on_conflict_do_update(index_elements=key, set_=set_of(ins.excluded)))
        return
    ins = sqlite.insert(table)
    stmt = ins.on_conflict_do_update(index_elements=key, set_=set_of(ins.excluded))
    compiled = stmt.compile(dialect=conn.dialect, column_keys=cols)
    rows = frame.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%d") for c in cols if frame.schema[c] == pl.Date()
    ).with_columns(
        pl.col(c).cast(pl.Int8) for c in cols if frame.schema[c] == pl.Boolean()
    ).select(list(compiled.positiontup))
    cur = conn.connection.driver_connection.cursor()
    try:
        for chunk in rows.iter_slices(CHUNK_ROWS):
            cur.executemany(str(compiled), chunk.iter_rows())
    finally:
        cur.close()


def _copy_frame(conn: sa.Connection, table_name: str, frame: pl.DataFrame, on_progress) -> None:
    """COPY a frame (text-compatible columns) into a PostgreSQL table, in CSV chunks."""
    copy_sql = f"COPY {table_name} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)"
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(copy_sql) as copy:
        for chunk in frame.iter_slices(CHUNK_ROWS):
            copy.write(chunk.write_csv(include_header=False))
            if on_progress:
                on_progress(chunk.height)


def _api_keys_upsert(conn: sa.Connection, ins):
    """An api_keys insert that, for a key already known, keeps the earliest created_at and the
    latest last_used_at (first and last use across every batch)."""
    k = api_keys.c
    greatest, least = _greatest_least(conn)
    return ins.on_conflict_do_update(
        index_elements=["org", "api_key"],
        set_={
            "last_used_at": greatest(sa.func.coalesce(k.last_used_at, ins.excluded.last_used_at),
                                     ins.excluded.last_used_at),
            "created_at": least(k.created_at, ins.excluded.created_at),
        },
    )


def _greatest_least(conn: sa.Connection):
    if conn.dialect.name == "postgresql":
        return sa.func.greatest, sa.func.least
    return sa.func.max, sa.func.min  # SQLite's scalar two-argument max/min


def _dialect_insert(conn: sa.Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _utc_day(conn: sa.Connection, ts: sa.ColumnElement) -> sa.ColumnElement:
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.timezone("UTC", ts), sa.Date)
    return sa.func.substr(ts, 1, 10)  # stored as UTC text "YYYY-MM-DD HH:MM:SS.ffffff"


def _utc_period(conn: sa.Connection, ts: sa.ColumnElement) -> sa.ColumnElement:
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", ts), "YYYY-MM")
    return sa.func.substr(ts, 1, 7)


def _upsert_rollup(conn: sa.Connection, run_id: int) -> None:
    e = usage_events.c
    exprs = {
        "day": _utc_day(conn, e.occurred_at),
        "org": e.org, "project": e.project, "environment": e.environment, "api_key": e.api_key,
        "meter": e.meter, "workload": e.workload, "channel": e.channel, "status": e.status,
        "retry": e.attempt > 1,
        "eligible": sa.and_(e.status == "success", sa.or_(e.meter != WEBHOOK_METER, e.attempt == 1)),
    }
    keys = [*ROLLUP_KEY, "eligible"]
    select = (
        sa.select(
            *[exprs[k].label(k) for k in keys],
            sa.func.sum(e.quantity_micros).label("quantity_micros"),
            sa.func.count().label("events"),
        )
        .where(e.ingest_run_id == run_id)
        .group_by(*[exprs[k] for k in keys])
    )
    ins = _dialect_insert(conn)(usage_daily).from_select([*keys, "quantity_micros", "events"], select)
    d = usage_daily.c
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=list(ROLLUP_KEY),
            set_={
                "quantity_micros": d.quantity_micros + ins.excluded.quantity_micros,
                "events": d.events + ins.excluded.events,
                "eligible": ins.excluded.eligible,
            },
        )
    )


def _upsert_orgs_projects_keys(conn: sa.Connection, run_id: int) -> None:
    e = usage_events.c
    insert = _dialect_insert(conn)
    in_run = e.ingest_run_id == run_id
    conn.execute(
        insert(organizations)
        .from_select(["org", "created_at"],
                     sa.select(e.org, sa.func.min(e.occurred_at)).where(in_run).group_by(e.org))
        .on_conflict_do_nothing(index_elements=["org"])
    )
    conn.execute(
        insert(projects)
        .from_select(["org", "project", "created_at"],
                     sa.select(e.org, e.project, sa.func.min(e.occurred_at)).where(in_run)
                     .group_by(e.org, e.project))
        .on_conflict_do_nothing(index_elements=["org", "project"])
    )
    part = [e.org, e.api_key]
    ranked = (
        sa.select(
            e.org, e.api_key, e.project, e.environment,
            sa.func.min(e.occurred_at).over(partition_by=part).label("first_at"),
            sa.func.max(e.occurred_at).over(partition_by=part).label("last_at"),
            sa.func.row_number().over(partition_by=part, order_by=[e.occurred_at, e.event_id]).label("rn"),
        )
        .where(in_run)
        .subquery()
    )
    r = ranked.c
    ins = insert(api_keys).from_select(
        ["org", "api_key", "project", "environment", "created_at", "last_used_at"],
        sa.select(r.org, r.api_key, r.project, r.environment, r.first_at, r.last_at).where(r.rn == 1),
    )
    conn.execute(_api_keys_upsert(conn, ins))


def _record_restatements(conn: sa.Connection, run_id: int, now: datetime) -> None:
    period_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    e = usage_events.c
    period = _utc_period(conn, e.occurred_at)
    select = (
        sa.select(
            sa.literal(run_id, sa.Integer), e.org, period, sa.func.count(),
            sa.func.sum(e.quantity_micros), sa.literal(now, TS),
        )
        .where(e.ingest_run_id == run_id, e.occurred_at < period_start)
        .group_by(e.org, period)
    )
    conn.execute(
        restatements.insert().from_select(
            ["ingest_run_id", "org", "period", "events", "quantity_micros", "recorded_at"], select
        )
    )


QUARANTINE_RAW_MAX = 65_536  # characters of a rejected row's raw text kept as evidence


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL: keep it visible as the two characters \\0."""
    return text.replace("\x00", "\\0")


def _storable_expr(e: pl.Expr) -> pl.Expr:
    return e.str.replace_all("\x00", "\\0", literal=True)


def _insert_quarantine(conn, rejected: pl.DataFrame, run_id: int, source: str, now: datetime) -> None:
    if rejected.is_empty():
        return
    rows = rejected.select(
        pl.lit(run_id).alias("ingest_run_id"),
        pl.lit(_storable(source)[:1000]).alias("source"),
        "line_number",
        _storable_expr(pl.col("org")).str.slice(0, 200),  # slice after escaping: varchar(200)
        _storable_expr(
            pl.when(pl.col("raw").str.len_chars() > QUARANTINE_RAW_MAX)
            .then(pl.format("{}... (cut at {} of {} characters)",
                            pl.col("raw").str.slice(0, QUARANTINE_RAW_MAX),
                            pl.lit(QUARANTINE_RAW_MAX), pl.col("raw").str.len_chars()))
            .otherwise(pl.col("raw"))
        ).alias("raw"),
        _storable_expr(pl.col("reason")),
    ).to_dicts()
    for row in rows:
        row["created_at"] = now
    conn.execute(quarantine.insert(), rows)


# ---------------------------------------------------------------------------------------------
# helpers


_RUN_SCHEMA = {
    "id": pl.Int64(), "source": pl.String(), "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"), "status": pl.String(), "rows_read": pl.Int64(),
    "accepted": pl.Int64(), "duplicates": pl.Int64(), "rejected": pl.Int64(), "run_by": pl.String(),
    "error": pl.String(),
}
_QUARANTINE_SCHEMA = {
    "id": pl.Int64(), "ingest_run_id": pl.Int64(), "source": pl.String(), "line_number": pl.Int64(),
    "org": pl.String(), "raw": pl.String(), "reason": pl.String(), "created_at": pl.Datetime("us", "UTC"),
}
_RESTATED_SCHEMA = {
    "org": pl.String(), "period": pl.String(), "events": pl.Int64(), "quantity_micros": pl.Int64(),
    "runs": pl.Int64(), "last_recorded_at": pl.Datetime("us", "UTC"),
}


def _check_orgs(orgs) -> None:
    if orgs is None or isinstance(orgs, str):
        raise UnscopedQuery("every read needs the collection of orgs the caller may see")


def _utc(ts: datetime) -> datetime:
    """Aware UTC datetime (a naive value is taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _frame(engine: sa.Engine, stmt, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(stmt).fetchall()
    names = list(schema)
    data = {n: [] for n in names}
    for row in rows:
        for n, v in zip(names, row, strict=True):
            if isinstance(v, Decimal) and schema[n] == pl.Int64():
                v = int(v)  # PostgreSQL sums of BIGINT are NUMERIC
            elif isinstance(v, datetime):
                v = _utc(v)
            elif isinstance(v, str) and schema[n] == pl.Datetime("us", "UTC"):
                v = _utc(datetime.fromisoformat(v))
            data[n].append(v)
    return pl.DataFrame(data, schema=schema)
