"""Load benchmark: PostgreSQL -> Polars by the project's path vs row objects, pandas.read_sql, COPY, ADBC.

Owns the ``bench_load`` database (created fresh, dropped at the end) on 127.0.0.1:5432: a
``usage_daily`` table (schema by ``queries.engine.upgrade``) filled by COPY with N unique,
deterministic rollup rows for one org over ~13 months. Two reads, each five ways:

- raw: every rollup column of the org's rows (``usage_select(orgs, start, end)``);
- aggregate: pushed-down ``SUM`` by (project, environment, meter, day)
  (``usage_select(..., group_by=...)``).

Paths: (a) ``queries.usage.load_usage`` as the project runs it (on PostgreSQL: ``COPY (SELECT)
TO STDOUT (FORMAT csv)`` on the engine's psycopg connection, parsed by Polars, sorted by
``sort_by_keys``; aggregates with ``work_mem`` 64MB for their transaction); (b) the path before
it, SQLAlchemy Row objects -> ``pl.DataFrame`` -> casts (``sqlalchemy_rows``); (c)
``pandas.read_sql`` of the same statement, then ``polars.from_pandas``; (d) the bench's own
psycopg ``COPY (same SELECT, bound parameters) TO STDOUT (FORMAT csv)`` -> ``polars.read_csv``
with explicit types and a plain ``DataFrame.sort``; (e) ADBC, the comparison the project
decided against (``adbc-driver-postgresql``, requirements-dev.txt; skipped when not
installed): the bench's own read on one connection kept open (``execute`` of the
psycopg-rendered SELECT, which ADBC reads by PostgreSQL's binary COPY, ``fetch_arrow_table``,
``pl.from_arrow``), with the same ``work_mem`` for aggregates and the same ``sort_by_keys`` as
(a), so the two differ only in transfer and decode. Paths (b)-(e) are checked equal to (a), so
quantities stay exact Int64 micro-units. rows/s = rows returned / wall seconds (median of N;
the paths run round robin, each once per round, so a load change on the shared machine hits
them alike); client CPU = this process's CPU seconds over all its threads (median).
Also reported: the cost of one ADBC connect (median of 5), which a product ADBC path would
have had to save with a connection pool of its own.

Run: ``PYTHONPATH=. .venv/bin/python bench/load_compare.py [--rows 1000000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from metering.domain import (  # noqa: E402
    DAY,
    ENVIRONMENT,
    EVENTS,
    METER,
    METER_NAMES,
    PROJECT,
    QUANTITY_MICROS,
    USAGE_SCHEMA,
    WEBHOOK_METER,
)

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_DB = "bench_load"
ORG_NAME = "acme-insurance"
FIRST_DAY = date(2025, 10, 17)
N_DAYS = 395
AGG_KEYS = [PROJECT, ENVIRONMENT, METER, DAY]


def run_load(rows: int = 1_000_000, repeat: int = 3, keep: bool = False) -> dict:
    """Create and fill bench_load, time every path for both reads; drop the database."""
    from queries.engine import make_engine, upgrade

    url = _fresh_database()
    engine = make_engine(url)
    try:
        upgrade(engine)
        t0 = time.perf_counter()
        _fill(engine, rows)
        fill_s = time.perf_counter() - t0
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE usage_daily"))
            heap, total = conn.execute(sa.text(
                "SELECT pg_relation_size('usage_daily'), pg_total_relation_size('usage_daily')")).one()
        out = {"rows": rows, "fill_copy_s": fill_s, "heap_bytes": heap, "total_bytes": total,
               "reads": {}}
        print(f"  usage_daily: {rows:,} rows, heap {heap / rows:.0f} B/row, with indexes "
              f"{total / rows:.0f} B/row", flush=True)
        out["adbc_connect_s"] = _adbc_connect_cost(engine)
        if out["adbc_connect_s"] is not None:
            print(f"  one ADBC connect: {out['adbc_connect_s'] * 1000:.1f} ms (median of 5)", flush=True)
        readers = dict(READERS)
        if _adbc_dbapi() is None:
            del readers["adbc"]
            print("  adbc: skipped (adbc-driver-postgresql not installed: pip install -r "
                  "requirements-dev.txt)", flush=True)
        out["load_average"] = os.getloadavg()
        for read, group_by in (("raw", None), ("aggregate", AGG_KEYS)):
            # round robin (every path once per round): a load change on the shared machine
            # hits every path alike instead of whichever path happened to run then
            times: dict[str, list[float]] = {path: [] for path in readers}
            cpu: dict[str, list[float]] = {path: [] for path in readers}
            heights: dict[str, int] = {}
            ref = None
            for _ in range(repeat):
                for path in readers:
                    t0, c0 = time.perf_counter(), time.process_time()
                    frame = readers[path](engine, group_by)
                    times[path].append(time.perf_counter() - t0)
                    cpu[path].append(time.process_time() - c0)  # every thread of this process
                    if ref is None:
                        ref = frame
                    elif not frame.equals(ref):
                        raise AssertionError(f"{path} {read}: frame differs from load_usage")
                    heights[path] = frame.height
                    del frame
            res = {}
            for path in readers:
                med, n = statistics.median(times[path]), heights[path]
                cpu_med = statistics.median(cpu[path])
                res[path] = {"median_s": med, "rows": n, "rows_per_s": n / med,
                             "runs_s": times[path], "client_cpu_s": cpu_med}
                print(f"  load {read:9s} {path:16s} {n:>9,} rows {med:.3f} s {n / med:>12,.0f} rows/s "
                      f"client CPU {cpu_med:.2f} s (runs {', '.join(f'{t:.2f}' for t in times[path])})",
                      flush=True)
            out["reads"][read] = res
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out
    finally:
        _close_adbc()
        engine.dispose()
        if not keep:
            _drop_database()


def read_load_usage(engine, group_by):
    from queries.usage import load_usage

    return load_usage(engine, [ORG_NAME], FIRST_DAY, None, group_by=group_by)


# --- ADBC: measured against load_usage's COPY CSV, not adopted (docs/performance.md) ---------

_ADBC_CONN: dict = {}


def _adbc_dbapi():
    """``adbc_driver_postgresql.dbapi`` (imported only here, lazily), or None when not installed."""
    try:
        import adbc_driver_postgresql.dbapi as dbapi
    except ImportError:
        return None
    return dbapi


def _adbc_uri(engine) -> str:
    """The libpq URI of the engine's URL (password kept), UTF-8 like the rendered SELECT's literals."""
    url = engine.url
    query = {**url.query, "connect_timeout": "5", "client_encoding": "UTF8"}
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def _close_adbc() -> None:
    for conn in _ADBC_CONN.values():
        conn.close()
    _ADBC_CONN.clear()


def read_adbc(engine, group_by):
    """The bench's own ADBC read on one connection kept open across calls: the psycopg-rendered
    SELECT (no bound parameters: ADBC then reads it by binary COPY) -> Arrow -> Polars, in one
    transaction with load_usage's work_mem for aggregates, sorted by the same sort_by_keys."""
    from queries.usage import AGGREGATE_WORK_MEM, literal_select, sort_by_keys, usage_select

    stmt = usage_select([ORG_NAME], FIRST_DAY, None, group_by=group_by)
    with engine.connect() as conn:
        sql = literal_select(engine, stmt, conn.connection.driver_connection)
    key = id(engine.pool)
    if key not in _ADBC_CONN:
        _close_adbc()
        _ADBC_CONN[key] = _adbc_dbapi().connect(_adbc_uri(engine))
    conn = _ADBC_CONN[key]
    with conn.cursor() as cur:
        if group_by is not None:
            cur.execute("SELECT set_config('work_mem', $1, true)", parameters=[AGGREGATE_WORK_MEM])
            cur.fetchall()
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    conn.rollback()  # ends the read's transaction and its work_mem
    names = [c.name for c in stmt.selected_columns]
    df = pl.from_arrow(table).select(pl.col(n).cast(USAGE_SCHEMA[n]) for n in names)
    return sort_by_keys(df, [c for c in names if c not in (QUANTITY_MICROS, EVENTS)])


def _adbc_connect_cost(engine) -> float | None:
    dbapi = _adbc_dbapi()
    if dbapi is None:
        return None
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        conn = dbapi.connect(_adbc_uri(engine))
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        times.append(time.perf_counter() - t0)
        conn.close()
    return statistics.median(times)


def read_rows(engine, group_by):
    """The previous load_usage path: SQLAlchemy Row objects -> pl.DataFrame(orient="row") -> casts."""
    from queries.usage import _coerce, usage_select

    stmt = usage_select([ORG_NAME], FIRST_DAY, None, group_by=group_by)
    with engine.connect() as conn:
        result = conn.execute(stmt)
        names = list(result.keys())
        rows = result.fetchall()
    df = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    return _coerce(df, {n: USAGE_SCHEMA[n] for n in names})


def read_pandas(engine, group_by):
    import pandas as pd

    from queries.usage import _coerce, usage_select

    stmt = usage_select([ORG_NAME], FIRST_DAY, None, group_by=group_by)
    with engine.connect() as conn:
        pdf = pd.read_sql(stmt, conn)
    df = pl.from_pandas(pdf)
    return _coerce(df, {n: USAGE_SCHEMA[n] for n in df.columns})


def read_copy_csv(engine, group_by):
    """COPY (SELECT ...) TO STDOUT (FORMAT csv) with bound parameters -> polars.read_csv."""
    from queries.usage import usage_select

    stmt = usage_select([ORG_NAME], FIRST_DAY, None, group_by=group_by)
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    names = [c.name for c in stmt.selected_columns]
    schema = {n: (pl.String if USAGE_SCHEMA[n] in (pl.Date(), pl.Boolean()) else USAGE_SCHEMA[n])
              for n in names}
    buf = io.BytesIO()
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur, cur.copy(f"COPY ({compiled.string}) TO STDOUT (FORMAT csv)",
                                           compiled.params) as copy:
            for block in copy:
                buf.write(block)
    finally:
        raw.close()
    df = pl.read_csv(buf.getvalue(), has_header=False, new_columns=names, schema=schema)
    exprs = []
    for n in names:
        dtype = USAGE_SCHEMA[n]
        if dtype == pl.Date():
            exprs.append(pl.col(n).str.to_date("%Y-%m-%d"))
        elif dtype == pl.Boolean():
            exprs.append(pl.col(n) == "t")
        else:
            exprs.append(pl.col(n))
    return df.select(exprs).sort([c for c in names if c not in (QUANTITY_MICROS, EVENTS)])


READERS = {"load_usage": read_load_usage,
           "sqlalchemy_rows": read_rows, "pandas_read_sql": read_pandas, "copy_csv": read_copy_csv,
           "adbc": read_adbc}


def _fill(engine, rows: int) -> None:
    """Unique rollup keys: row i -> key index (i * stride) mod (days*keys*meters*workloads)."""
    import numpy as np

    n_keys, n_work = 600, 5
    total = N_DAYS * n_keys * len(METER_NAMES) * n_work
    if rows > total:
        raise ValueError(f"at most {total} unique rows, asked for {rows}")
    stride = 1_000_003  # prime, coprime with total -> a permutation of the key space
    j = (np.arange(rows, dtype=np.int64) * stride) % total
    day, j = j % N_DAYS, j // N_DAYS
    key, j = j % n_keys, j // n_keys
    meter, work = j % len(METER_NAMES), j // len(METER_NAMES)
    meters = np.array(METER_NAMES)[meter]
    failed = (np.arange(rows) % 23) == 0
    retry = (meters == WEBHOOK_METER) & ((np.arange(rows) % 17) == 0)
    qty = ((np.arange(rows) % 59) + 1) * 1_000_000 + np.where(np.arange(rows) % 10 == 0, 250_000, 0)
    df = pl.DataFrame({
        "day": pl.Series(day).cast(pl.Int32),
        "project": [f"project-{k % 40:02d}" for k in key],
        "environment": np.where((key // 40) % 2 == 0, "sandbox", "production"),
        "api_key": [f"key-{k:04d}" for k in key],
        "meter": meters,
        "workload": np.array(["underwriting", "workforce-review", "finance-package",
                              "compliance-package", "bulk-export"])[work],
        "channel": np.where(meters == WEBHOOK_METER, "delivery", "api"),
        "status": np.where(failed, "failed", "success"),
        "retry": retry,
        "eligible": ~failed & ~retry,
        "quantity_micros": qty.astype(np.int64),
        "events": (qty // 1_000_000).astype(np.int64),
    }).with_columns(
        (pl.lit(FIRST_DAY) + pl.duration(days=pl.col("day"))).cast(pl.Date).alias("day"),
        pl.lit(ORG_NAME).alias("org"),
    )
    cols = list(USAGE_SCHEMA)
    buf = io.BytesIO()
    df.select(cols).write_csv(buf, include_header=False)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            with cur.copy(f"COPY usage_daily ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buf.getvalue())
        raw.commit()
    finally:
        raw.close()


def _fresh_database() -> str:
    from queries.engine import recreate_database

    return recreate_database(PG_ADMIN_URL, PG_DB)


def _drop_database() -> None:
    from queries.engine import drop_database

    drop_database(PG_ADMIN_URL, PG_DB)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args(argv)
    out = run_load(args.rows, args.repeat)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
