"""Scoped reads of the daily usage rollup into Polars frames.

Every function takes ``orgs``, the set of orgs the caller may see; an empty set reads nothing.
Filters and group-by columns come from whitelists (metering.domain), values are bound.

PostgreSQL reads of ``load_usage`` run as ``COPY (<SELECT>) TO STDOUT (FORMAT csv)`` on the
engine's own psycopg connection (inside a SQLAlchemy transaction, so the org scope, the
statement timeout and the fault translation are the engine's), parsed by Polars. Why this and
not an Arrow driver (measured equal, not adopted): docs/performance.md, "PostgreSQL -> Polars".
"""

from __future__ import annotations

import io
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
    parameters rendered by psycopg) runs as ``COPY (...) TO STDOUT (FORMAT csv)`` in a
    transaction carrying the engine's org scope and statement timeout, and Polars parses the CSV
    (no Python object per row). On SQLite the rows come through SQLAlchemy.
    """
    stmt = usage_select(orgs, start, end, filters, group_by)
    names = [c.name for c in stmt.selected_columns]
    schema = {n: USAGE_SCHEMA[n] for n in names}
    if engine.dialect.name == "postgresql":
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

    One integer sort of ``pack_keys``' codes replaces a multi-column sort over strings; falls back to
    ``df.sort`` when there are no codes (nulls, other dtypes, more than 64 bits). Same result.
    The key columns of the result are decoded from the sorted codes (each key's rank looked up
    in its few distinct values) instead of gathered row by row: a gather of 1M strings is random
    access over the whole column (~70-150 ms per column measured), the lookup is not.
    """
    if df.height < 2 or not keys:
        return df
    packed = pack_keys(df, keys)
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


def pack_keys(df: pl.DataFrame, keys: Sequence[str]):
    """(codes, bit widths, decoders: ranks -> the key's values), or None when the keys do not fit.

    The codes are one UInt64 per row that orders rows exactly as ``df.sort(keys)`` does (equal
    keys, equal codes). Each key becomes its dense rank in Polars' own order (strings: the
    categorical code mapped to the rank of its string among the column's distinct values; dates
    and integers: offset from the minimum; booleans: 0/1) and the ranks are packed, first key in
    the highest bits. None when a key has nulls or another dtype, or the ranks need more than 64 bits.
    """
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


__all__ = ["DAY", "UnscopedQuery", "load_usage", "usage_bounds", "usage_select"]
