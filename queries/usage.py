"""Scoped reads of the daily usage rollup into Polars frames.

Every function takes ``orgs``, the set of orgs the caller may see; an empty set reads nothing.
Filters and group-by columns come from whitelists (metering.domain), values are bound.

PostgreSQL reads of ``load_usage`` go through ADBC (``adbc-driver-postgresql``: PostgreSQL's
binary COPY straight into Arrow) when it is importable, else through ``COPY ... (FORMAT csv)``
parsed by Polars; ``METERING_PG_READ=adbc|copy`` forces one.
"""

from __future__ import annotations

import io
import os
import threading
import weakref
from collections.abc import Collection, Sequence
from datetime import date

import numpy as np
import polars as pl
import sqlalchemy as sa

from metering.domain import (
    DAY,
    DIMENSIONS,
    ELIGIBLE,
    EVENTS,
    QUANTITY_MICROS,
    RETRY,
    STATUS,
    USAGE_SCHEMA,
)
from queries.schema import usage_daily

_FILTER_COLUMNS = ("project", "environment", "api_key", "workload", "meter", "channel")


class UnscopedQuery(ValueError):
    """Raised when a read is attempted without an org scope."""


def _scoped_where(orgs, start, end, filters):
    if orgs is None or isinstance(orgs, str):
        raise UnscopedQuery("every read needs the collection of orgs the caller may see")
    t = usage_daily.c
    where = [t.org.in_(sorted(set(orgs)))]
    if start is not None:
        where.append(t.day >= start)
    if end is not None:
        where.append(t.day <= end)
    for col, values in (filters or {}).items():
        if col not in _FILTER_COLUMNS:
            raise ValueError(f"unknown filter column {col!r}")
        if values:
            where.append(getattr(t, col).in_(sorted(set(values))))
    return where


def usage_select(
    orgs: Collection[str],
    start: date | None,
    end: date | None,
    filters: dict[str, Sequence[str]] | None = None,
    group_by: Sequence[str] | None = None,
) -> sa.Select:
    """Build the SELECT (pure; bound parameters only)."""
    where = _scoped_where(orgs, start, end, filters)
    t = usage_daily.c
    if group_by is None:
        cols = [getattr(t, c) for c in USAGE_SCHEMA]
        return sa.select(*cols).where(*where)
    keys = ["org", *[g for g in group_by if g != "org"]]
    for g in keys:
        if g not in (*DIMENSIONS, "org", STATUS, RETRY, ELIGIBLE):
            raise ValueError(f"unknown group-by column {g!r}")
    key_cols = [getattr(t, g) for g in keys]
    return (
        sa.select(
            *key_cols,
            # PostgreSQL's SUM(bigint) is numeric: cast back to bigint (exact; an overflow is an error)
            sa.cast(sa.func.sum(t.quantity_micros), sa.BigInteger).label(QUANTITY_MICROS),
            sa.cast(sa.func.sum(t.events), sa.BigInteger).label(EVENTS),
        )
        .where(*where)
        .group_by(*key_cols)
    )


def load_usage(
    engine: sa.Engine,
    orgs: Collection[str],
    start: date | None = None,
    end: date | None = None,
    filters: dict[str, Sequence[str]] | None = None,
    group_by: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Rollup rows (or a pushed-down aggregate) for the orgs and days [start, end].

    The frame has the USAGE_SCHEMA dtypes of its columns and is sorted by every key column (all
    but quantity_micros and events), the same on both databases. On PostgreSQL the SELECT (its
    parameters rendered by psycopg) runs through ADBC, which reads it by binary COPY into Arrow,
    in a transaction carrying the engine's org scope and statement timeout; without ADBC (or
    with ``METERING_PG_READ=copy``) it runs as ``COPY (...) TO STDOUT (FORMAT csv)`` and Polars
    parses the CSV. Either way no Python object per row. On SQLite the rows come through
    SQLAlchemy.
    """
    stmt = usage_select(orgs, start, end, filters, group_by)
    names = [c.name for c in stmt.selected_columns]
    schema = {n: USAGE_SCHEMA[n] for n in names}
    if engine.dialect.name == "postgresql":
        if pg_read_path() == "adbc":
            return _load_by_adbc(engine, stmt, schema, aggregate=group_by is not None)
        return _load_by_copy(engine, stmt, schema, aggregate=group_by is not None)
    with engine.connect() as conn:
        rows = conn.execute(stmt).fetchall()
    if not rows:
        return pl.DataFrame(schema=schema)
    df = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    return _coerce(df, schema)


def copy_statement(engine: sa.Engine, stmt: sa.Select, cursor) -> str:
    """``COPY (<stmt>) TO STDOUT (FORMAT csv)`` with the bound parameters rendered as literals by
    psycopg's client-side binding (``ClientCursor.mogrify``: quoting and escaping by the driver,
    never by string formatting here). COPY cannot take server-side parameters."""
    return f"COPY ({literal_select(engine, stmt, cursor.connection)}) TO STDOUT (FORMAT csv, ENCODING 'UTF8')"


def literal_select(engine: sa.Engine, stmt: sa.Select, pg_connection) -> str:
    """The SELECT's text with its bound parameters rendered as literals by psycopg's client-side
    binding (``ClientCursor.mogrify`` on a live psycopg connection: the server's quoting rules)."""
    import psycopg

    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    return psycopg.ClientCursor(pg_connection).mogrify(compiled.string, compiled.params)


# transaction-local work_mem of a pushed-down aggregate: lets PostgreSQL hash the groups in
# memory (HashAggregate) instead of an external merge sort on disk: 1M rollup rows -> 190k groups
# 0.72 s instead of 1.9 s (EXPLAIN ANALYZE, 2026-11-26). A hash table is capped at work_mem x
# hash_mem_multiplier (2 by default) and spills beyond: bounded per read.
AGGREGATE_WORK_MEM = "64MB"


def _load_by_copy(engine: sa.Engine, stmt: sa.Select, schema: dict[str, pl.DataType], *,
                  aggregate: bool = False) -> pl.DataFrame:
    import psycopg

    buf = io.BytesIO()
    with engine.connect() as conn:
        # begin through SQLAlchemy first: its "begin" event sets the org scope that row-level
        # security reads (queries.engine.scoped_engine); the COPY runs in that transaction
        conn.begin()
        if aggregate:
            conn.exec_driver_sql("SELECT set_config('work_mem', %(v)s, true)", {"v": AGGREGATE_WORK_MEM})
        raw = conn.connection.driver_connection
        try:
            with raw.cursor() as cur:
                with cur.copy(copy_statement(engine, stmt, cur)) as copy:
                    for block in copy:  # one block per row: write() it, no bytes object each
                        buf.write(block)
        except psycopg.Error as exc:
            fault = _copy_fault(engine, raw, exc)
            if raw.broken:
                conn.invalidate()
            if fault is None:
                raise
            raise fault from exc
    if not buf.tell():
        return pl.DataFrame(schema=schema)
    # PostgreSQL's CSV: NULL is an empty unquoted field, '' is "" (Polars reads them the same
    # way); booleans are t/f, dates ISO, numbers plain
    text_schema = {n: pl.String if dtype == pl.Boolean() else dtype for n, dtype in schema.items()}
    buf.seek(0)
    df = pl.read_csv(buf, has_header=False, schema=text_schema, quote_char='"')
    df = df.with_columns(pl.col(n) == "t" for n, dtype in schema.items() if dtype == pl.Boolean())
    return sort_by_keys(df, [c for c in schema if c not in (QUANTITY_MICROS, EVENTS)])


# ---------------------------------------------------------------------------------------------
# PostgreSQL through ADBC (Arrow from PostgreSQL's binary COPY)

READ_PATH_ENV = "METERING_PG_READ"
_READ_PATHS = ("adbc", "copy")
ADBC_APPLICATION_NAME = "metering-adbc"
ADBC_MAX_IDLE = 4  # idle ADBC connections kept per engine pool (a connect costs ~80 ms locally)


def _adbc_dbapi():
    """``adbc_driver_postgresql.dbapi``, or None when it is not installed."""
    try:
        import adbc_driver_postgresql.dbapi as dbapi
    except ImportError:
        return None
    return dbapi


def pg_read_path() -> str:
    """``"adbc"`` or ``"copy"``: ``METERING_PG_READ`` if set, else ADBC when importable."""
    forced = os.environ.get(READ_PATH_ENV, "").strip().lower()
    if forced and forced not in _READ_PATHS:
        raise ValueError(f"{READ_PATH_ENV} must be one of {', '.join(_READ_PATHS)}, not {forced!r}")
    if forced == "adbc" and _adbc_dbapi() is None:
        raise RuntimeError(f"{READ_PATH_ENV}=adbc but adbc-driver-postgresql is not installed "
                           "(pip install -r requirements.txt, or set it to copy)")
    if forced:
        return forced
    return "adbc" if _adbc_dbapi() is not None else "copy"


class _AdbcPool:
    """A small thread-safe pool of ADBC connections for one SQLAlchemy pool (same URL).

    Connections are made on demand; at most ``max_idle`` are kept between reads, the rest
    closed. Every read runs in its own transaction, rolled back at the end, so nothing
    (scope, timeout) stays on a pooled connection."""

    def __init__(self, uri: str, owner: sa.Engine, max_idle: int = ADBC_MAX_IDLE):
        self.uri = uri
        self.owner = weakref.ref(owner)  # the base engine, whose dispose() closes this pool
        self._max_idle = max_idle
        self._idle: list = []
        self._lock = threading.Lock()
        self.connects = 0

    def get(self, *, fresh: bool = False):
        """(connection, reused): an idle one unless ``fresh``, else a new connection."""
        if not fresh:
            with self._lock:
                if self._idle:
                    return self._idle.pop(), True
        conn = _adbc_dbapi().connect(self.uri)
        with self._lock:
            self.connects += 1
        return conn, False

    def put(self, conn) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a dead connection cannot be closed cleanly; it is gone anyway
        pass


_ADBC_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # SQLAlchemy Pool -> _AdbcPool
_ADBC_POOLS_LOCK = threading.Lock()


def adbc_pool(engine: sa.Engine) -> _AdbcPool:
    """The ADBC connections that go with ``engine``'s SQLAlchemy pool (shared by every
    ``scoped_engine`` of it). ``engine.dispose()`` closes them, so does the garbage collection
    of the SQLAlchemy pool."""
    key = engine.pool
    with _ADBC_POOLS_LOCK:
        pool = _ADBC_POOLS.get(key)
        if pool is None:
            base = _base_engine(engine)
            pool = _ADBC_POOLS[key] = _AdbcPool(adbc_uri(engine), base)
            weakref.finalize(key, pool.close)
            if not sa.event.contains(base, "engine_disposed", _on_engine_disposed):
                sa.event.listen(base, "engine_disposed", _on_engine_disposed)
        return pool


def _base_engine(engine: sa.Engine) -> sa.Engine:
    while isinstance(getattr(engine, "_proxied", None), sa.Engine):  # OptionEngine (scoped_engine)
        engine = engine._proxied
    return engine


def _on_engine_disposed(engine: sa.Engine) -> None:
    """``Engine.dispose()`` replaced the SQLAlchemy pool: close the ADBC pools of the old one."""
    with _ADBC_POOLS_LOCK:
        stale = [(k, p) for k, p in _ADBC_POOLS.items() if p.owner() is engine and k is not engine.pool]
        for k, _ in stale:
            del _ADBC_POOLS[k]
    for _, pool in stale:
        pool.close()


def adbc_uri(engine: sa.Engine) -> str:
    """The libpq URI for ADBC: the engine's URL (its password included: it is never shown) with
    the same connect timeout and UTF-8 client encoding (the text the SELECT's literals are in)."""
    url = engine.url
    query = {**url.query, "connect_timeout": "5", "client_encoding": "UTF8",
             "application_name": ADBC_APPLICATION_NAME}
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def _load_by_adbc(engine: sa.Engine, stmt: sa.Select, schema: dict[str, pl.DataType], *,
                  aggregate: bool = False) -> pl.DataFrame:
    from queries.engine import SCOPE_OPTION, TIMEOUT_OPTION

    # the parameters rendered by psycopg on a pooled SQLAlchemy connection (released at once): a
    # parameter-free SELECT is what ADBC reads by binary COPY (with bound parameters it runs a
    # prepared statement and buffers the whole result in libpq: ~2x the peak memory, measured)
    with engine.connect() as conn:
        sql = literal_select(engine, stmt, conn.connection.driver_connection)
    options = engine.get_execution_options()
    timeout = options.get(TIMEOUT_OPTION)
    settings = _transaction_settings(options.get(SCOPE_OPTION), timeout)
    if aggregate:
        settings.append(("work_mem", AGGREGATE_WORK_MEM))
    pool = adbc_pool(engine)
    fresh = False
    while True:
        try:
            conn, reused = pool.get(fresh=fresh)
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
            fault = _adbc_fault(engine, exc, timeout)
            if fault is exc:
                raise
            raise fault from exc
        try:
            table = _adbc_read(conn, sql, settings)
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
            _close_quietly(conn)
            if reused and _adbc_disconnected(exc):
                fresh = True  # a pooled connection the server dropped: once more on a new one
                continue
            fault = _adbc_fault(engine, exc, timeout)
            if fault is exc:
                raise
            raise fault from exc
        pool.put(conn)
        break
    df = pl.from_arrow(table)
    if df.schema != pl.Schema(schema):
        df = df.select(pl.col(n).cast(dtype, strict=True) for n, dtype in schema.items())
    return sort_by_keys(df, [c for c in schema if c not in (QUANTITY_MICROS, EVENTS)])


def _transaction_settings(scope: str | None, timeout_ms: int | None) -> list[tuple[str, str]]:
    """(setting, value) pairs set transaction-locally (``set_config(..., true)`` = ``SET LOCAL``)
    before the SELECT: the org scope exactly as queries.engine._apply_org_scope sets it for
    SQLAlchemy transactions, and the engine's statement timeout."""
    from queries.engine import ALL_ORGS, ALL_ORGS_SETTING, ORGS_SETTING

    out = []
    if scope is not None:
        every = scope == ALL_ORGS
        out += [(ORGS_SETTING, "" if every else scope), (ALL_ORGS_SETTING, "on" if every else "off")]
    if timeout_ms:
        out.append(("statement_timeout", str(int(timeout_ms))))
    return out


def _adbc_read(conn, sql: str, settings: list[tuple[str, str]]):
    """One transaction: the settings (bound parameters), the SELECT into Arrow, rollback."""
    with conn.cursor() as cur:
        if settings:
            calls = ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(settings)))
            cur.execute(f"SELECT {calls}", parameters=[v for pair in settings for v in pair])
            cur.fetchall()
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    conn.rollback()  # a read: ends the transaction and its SET LOCALs
    return table


def _adbc_disconnected(exc: BaseException) -> bool:
    import adbc_driver_manager

    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    return (not state and isinstance(exc, adbc_driver_manager.Error)
            and getattr(exc, "status_code", None) == adbc_driver_manager.AdbcStatusCode.IO)


def _adbc_fault(engine: sa.Engine, exc: Exception, timeout_ms: int | None) -> Exception:
    """The same translation psycopg errors get (queries.engine.classify_fault), by SQLSTATE; the
    ADBC error itself when it is none of timeout / permission / unavailable."""
    import psycopg

    from queries.engine import classify_fault, safe_url

    state = getattr(exc, "sqlstate", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        as_psycopg = psycopg.errors.lookup(state)(text) if state else psycopg.OperationalError(text)
    except KeyError:
        as_psycopg = psycopg.DatabaseError(text)
    disconnected = _adbc_disconnected(exc)
    if not state and not disconnected:
        return exc
    fault = classify_fault(as_psycopg, "postgresql", disconnected,
                           f"{int(timeout_ms)} ms" if timeout_ms else None,
                           f"PostgreSQL at {safe_url(engine.url)}")
    return exc if fault is None else fault


def _copy_fault(engine: sa.Engine, raw, exc: Exception) -> Exception | None:
    """The same translation SQLAlchemy-run statements get (queries.engine's handle_error)."""
    import re

    from queries.engine import classify_fault, safe_url

    try:
        options = raw.info.get_parameters().get("options", "")
    except Exception:  # noqa: BLE001 - a broken connection has no parameters to read
        options = ""
    found = re.search(r"statement_timeout=(\d+)", options)
    timeout = f"{found.group(1)} ms" if found else None
    return classify_fault(exc, "postgresql", bool(raw.closed or raw.broken), timeout,
                          f"PostgreSQL at {safe_url(engine.url)}")


def _coerce(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    exprs = []
    for name, dtype in schema.items():
        col = pl.col(name)
        if dtype == pl.Date() and df.schema[name] == pl.String():
            col = col.str.to_date("%Y-%m-%d")
        exprs.append(col.cast(dtype).alias(name))
    return sort_by_keys(df.select(exprs), [c for c in schema if c not in (QUANTITY_MICROS, EVENTS)])


def sort_by_keys(df: pl.DataFrame, keys: Sequence[str], *, nulls_last: bool = False) -> pl.DataFrame:
    """``df.sort(keys, nulls_last=nulls_last)``, faster for keys of small cardinality (the rollup's).

    One integer sort of ``key_codes`` replaces a multi-column sort over strings; falls back to
    ``df.sort`` when there are no codes (nulls, other dtypes, more than 64 bits). Same result.
    The key columns of the result are decoded from the sorted codes (each key's rank looked up
    in its few distinct values) instead of gathered row by row: a gather of 1M strings is random
    access over the whole column (~70-150 ms per column measured), the lookup is not.
    """
    if df.height < 2 or not keys:
        return df
    packed = _pack_keys(df, keys)
    if packed is None:
        return df.sort(keys, nulls_last=nulls_last)
    codes, widths, decoders = packed
    if bool(np.all(codes[1:] >= codes[:-1])):  # already in order (e.g. PostgreSQL's GroupAggregate)
        return df
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    columns: dict[str, pl.Series] = {}
    shift = sum(widths)
    for key, width, decode in zip(keys, widths, decoders, strict=True):
        shift -= width
        ranks = (ordered >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        columns[key] = decode(ranks).alias(key)
    rest = [c for c in df.columns if c not in columns]
    if rest:
        gathered = df.select(rest)[pl.Series(order)]
        columns.update({c: gathered[c] for c in rest})
    return pl.DataFrame([columns[c] for c in df.columns])


def key_codes(df: pl.DataFrame, keys: Sequence[str]) -> np.ndarray | None:
    """One UInt64 per row that orders rows exactly as ``df.sort(keys)`` does (equal keys, equal
    codes), or None when the keys do not fit.

    Each key becomes its dense rank in Polars' own order (strings: the categorical code mapped to
    the rank of its string among the column's distinct values; dates and integers: offset from
    the minimum; booleans: 0/1) and the ranks are packed, first key in the highest bits. None
    when a key has nulls or another dtype, or the ranks need more than 64 bits.
    """
    packed = _pack_keys(df, keys)
    return None if packed is None else packed[0]


def _pack_keys(df: pl.DataFrame, keys: Sequence[str]):
    """(codes, bit widths, decoders: ranks -> the key's values) for ``key_codes``, or None."""
    codes: list[np.ndarray] = []
    widths: list[int] = []
    decoders: list = []
    for k in keys:
        col = df[k]
        if col.null_count():
            return None
        dtype = col.dtype
        if dtype == pl.String:
            cat = col.cast(pl.Categorical)
            phys = cat.to_physical().cast(pl.Int64)
            if df.height and int(phys.max()) > 4 * df.height + 1_000_000:  # a huge global string pool
                return None
            distinct = cat.unique()
            by_text = distinct.cast(pl.String).arg_sort()
            lookup = np.zeros(int(phys.max() or 0) + 1, dtype=np.uint64)
            lookup[distinct.to_physical().cast(pl.Int64).to_numpy()[by_text.to_numpy()]] = np.arange(
                len(distinct), dtype=np.uint64)
            codes.append(lookup[phys.to_numpy()])
            n = len(distinct)
            texts = distinct.cast(pl.String).gather(by_text)
            decoders.append(lambda ranks, texts=texts: texts.gather(pl.Series(ranks.astype(np.int64))))
        elif dtype == pl.Boolean:
            codes.append(col.cast(pl.UInt64).to_numpy())
            n = 2
            decoders.append(lambda ranks: pl.Series(ranks.astype(bool)))
        elif dtype == pl.Date or dtype.is_integer():
            phys = col.to_physical().cast(pl.Int64).to_numpy()
            lo = int(phys.min()) if len(phys) else 0
            n = (int(phys.max()) - lo + 1) if len(phys) else 1
            codes.append((phys - lo).astype(np.uint64))
            decoders.append(lambda ranks, lo=lo, dtype=dtype: _from_offsets(ranks, lo, dtype))
        else:
            return None
        widths.append(max(1, (n - 1).bit_length()))
    if sum(widths) > 64:
        return None
    packed = np.zeros(df.height, dtype=np.uint64)
    for code, width in zip(codes, widths, strict=True):
        packed = (packed << np.uint64(width)) | code
    return packed, widths, decoders


def _from_offsets(ranks: np.ndarray, lo: int, dtype: pl.DataType) -> pl.Series:
    values = pl.Series(ranks.astype(np.int64)) + lo
    if dtype == pl.Date:
        return values.cast(pl.Int32).cast(pl.Date)
    return values.cast(dtype)


def usage_bounds(engine: sa.Engine, orgs: Collection[str]) -> tuple[date | None, date | None]:
    """First and last day with usage for the orgs."""
    where = _scoped_where(orgs, None, None, None)
    t = usage_daily.c
    with engine.connect() as conn:
        lo, hi = conn.execute(sa.select(sa.func.min(t.day), sa.func.max(t.day)).where(*where)).one()
    if isinstance(lo, str):
        lo, hi = date.fromisoformat(lo), date.fromisoformat(hi)
    return lo, hi


__all__ = ["DAY", "UnscopedQuery", "load_usage", "pg_read_path", "usage_bounds", "usage_select"]
