"""queries.usage.load_usage: the same frame on SQLite (SQLAlchemy rows) and PostgreSQL (COPY ...
TO STDOUT as CSV, parsed by Polars): dtypes, sort order, filters, group-by, empty results and
awkward text (quotes, commas, newlines, unicode, empty strings, SQL-looking values). The
PostgreSQL read also keeps the org scope (row-level security), the statement timeout, fault
translation, and leaves no setting (work_mem) on the pooled connection.

The expected frames are computed here in plain Python from the inserted rows (filter, group,
sort by the key columns), independently of every read path."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import date, timedelta

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa

from metering.domain import USAGE_SCHEMA
from queries import usage
from queries.engine import (
    DatabasePermissionDenied,
    DatabaseTimeout,
    DatabaseUnavailable,
    make_engine,
    scoped_engine,
    upgrade,
)
from queries.roles import setup_roles
from queries.usage import UnscopedQuery, copy_statement, load_usage, usage_select
from tests.billing_helpers import insert_usage, row
from tests.conftest import _truncate
from tests.test_pg_roles import _seed_two_orgs, fresh, roles  # noqa: F401 - fixtures used below

KEYS = [c for c in USAGE_SCHEMA if c not in ("quantity_micros", "events")]
ORGS = ["o'hara & sons", 'bürö "zwei", gmbh', "acme"]
PROJECTS = ["p, with comma", "line\nbreak", 'say "hi"', "", "t", "NULL", "  padded  ", "日本語",
            r"back\slash"]


def _rows() -> list[dict]:
    out = []
    for i in range(160):
        out.append(row(
            org=ORGS[i % 3], project=PROJECTS[i % len(PROJECTS)],
            environment="production" if i % 4 else "sandbox", api_key=f"key-{i % 7}",
            meter=["lookup", "report_job", "webhook_delivery"][i % 3 if i % 5 else 2],
            workload=["underwriting", "ünïcode-wörk"][i % 2], channel="api",
            day=date(2026, 2, 25) + timedelta(days=i % 11),
            status="failed" if i % 13 == 0 else "success", retry=i % 6 == 0,
            quantity=(i * 7919 % 1000) + (i % 3) / 4 if i % 17 else 100_000_000_000,  # 1e17 micros
            events=i + 1,
        ))
    return out


ROWS = _rows()


def _expected(orgs, start=None, end=None, filters=None, group_by=None) -> pl.DataFrame:
    picked = [
        r for r in ROWS
        if r["org"] in orgs and (start is None or r["day"] >= start) and (end is None or r["day"] <= end)
        and all(not v or r[c] in v for c, v in (filters or {}).items())
    ]
    if group_by is None:
        merged: dict[tuple, dict] = {}
        for r in picked:  # the store merges rows with the same rollup key (insert_usage does too)
            k = tuple(r[c] for c in KEYS if c != "eligible")
            if k in merged:
                m = merged[k]
                merged[k] = {**m, "quantity_micros": m["quantity_micros"] + r["quantity_micros"],
                             "events": m["events"] + r["events"]}
            else:
                merged[k] = dict(r)
        out = sorted(merged.values(), key=lambda r: tuple(r[c] for c in KEYS))
        if not out:
            return pl.DataFrame(schema=USAGE_SCHEMA)
        return pl.DataFrame(out, schema=USAGE_SCHEMA, orient="row")
    keys = ["org", *[g for g in group_by if g != "org"]]
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for r in picked:
        s = sums[tuple(r[k] for k in keys)]
        s[0] += r["quantity_micros"]
        s[1] += r["events"]
    schema = {k: USAGE_SCHEMA[k] for k in [*keys, "quantity_micros", "events"]}
    data = [(*k, q, e) for k, (q, e) in sorted(sums.items())]
    return pl.DataFrame(data, schema=schema, orient="row")


CASES = [
    ({"orgs": ORGS}, "every org, every row"),
    ({"orgs": [ORGS[0]]}, "one org with a quote"),
    ({"orgs": [ORGS[1], ORGS[2]], "start": date(2026, 2, 27), "end": date(2026, 3, 2)}, "days"),
    ({"orgs": ORGS, "filters": {"project": ['say "hi"', "p, with comma", ""], "meter": ["lookup"]}},
     "filters"),
    ({"orgs": ORGS, "filters": {"workload": ["ünïcode-wörk"], "project": []}},
     "unicode filter, empty filter"),
    ({"orgs": ORGS, "group_by": ["project", "day"]}, "group by project, day"),
    ({"orgs": [ORGS[1]], "group_by": ["retry", "meter"]}, "group by a boolean"),
    ({"orgs": ORGS, "group_by": ["eligible", "status", "environment"]}, "group by eligible"),
    ({"orgs": ORGS, "group_by": []}, "group by org only"),
    ({"orgs": ORGS, "start": date(2026, 2, 27), "group_by": ["api_key"],
      "filters": {"project": ["line\nbreak", "日本語"]}}, "group by with filters"),
    ({"orgs": ["nobody"]}, "an org without usage"),
    ({"orgs": []}, "the empty scope"),
    ({"orgs": ORGS, "start": date(2027, 1, 1)}, "no day in range"),
    ({"orgs": ORGS, "start": date(2027, 1, 1), "group_by": ["project"]}, "empty aggregate"),
]


@pytest.mark.parametrize(("kw", "label"), CASES, ids=[c[1] for c in CASES])
def test_load_usage_matches_an_independent_computation(engine, kw, label):
    insert_usage(engine, ROWS)
    got = load_usage(engine, **kw)
    want = _expected(**kw)
    assert got.schema == want.schema, label
    assert got.equals(want), label
    if kw.get("group_by") is None:
        assert got.schema == pl.Schema(USAGE_SCHEMA)


def test_sqlite_and_postgresql_frames_are_identical(pg_engine, tmp_path):
    sqlite = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(sqlite)
    try:
        _truncate(pg_engine)
        for eng in (sqlite, pg_engine):
            insert_usage(eng, ROWS)
        for kw, label in CASES:
            a, b = load_usage(sqlite, **kw), load_usage(pg_engine, **kw)
            assert a.schema == b.schema, label
            assert a.equals(b), label
        assert load_usage(pg_engine, ORGS).height == len(_expected(ORGS))
    finally:
        sqlite.dispose()


def test_aggregate_sums_stay_exact_beyond_float(pg_engine):
    """SUM(bigint) is numeric in PostgreSQL; the frame has exact Int64 sums, not floats."""
    _truncate(pg_engine)
    big = 2**53 + 1  # not representable as a float64
    rows = [row(org="acme", project="p", day=date(2026, 3, 1), quantity=0, events=big),
            row(org="acme", project="p", day=date(2026, 3, 2), quantity=0, events=2)]
    insert_usage(pg_engine, rows)
    got = load_usage(pg_engine, ["acme"], group_by=["project"])
    assert got.schema["events"] == pl.Int64
    assert got["events"].to_list() == [2**53 + 3]  # exact: no float64 holds 2**53 + 3


def _own_engine(pg_engine, **kw) -> sa.Engine:
    """A new engine on the test database: its pool holds only the connections this test makes."""
    return make_engine(pg_engine.url.render_as_string(hide_password=False), **kw)


def _setting_and_pid(eng: sa.Engine, name: str) -> tuple[str, int]:
    with eng.connect() as conn:
        return tuple(conn.execute(sa.text("SELECT current_setting(:n), pg_backend_pid()"), {"n": name}).one())


def test_aggregate_reads_set_work_mem_for_their_transaction_only(pg_engine, monkeypatch):
    _truncate(pg_engine)
    insert_usage(pg_engine, ROWS)
    eng = _own_engine(pg_engine)
    try:
        before, pid = _setting_and_pid(eng, "work_mem")  # the pool's one connection
        assert before != usage.AGGREGATE_WORK_MEM
        monkeypatch.setattr(usage, "AGGREGATE_WORK_MEM", "10")  # 10 kB: below PostgreSQL's minimum of 64
        with pytest.raises(Exception, match="10 kB is outside the valid range for parameter \"work_mem\""):
            load_usage(eng, ORGS, group_by=["project"])
        assert load_usage(eng, ORGS).equals(_expected(ORGS))  # raw reads do not set it
        monkeypatch.setattr(usage, "AGGREGATE_WORK_MEM", "64MB")
        assert load_usage(eng, ORGS, group_by=["project"]).equals(_expected(ORGS, group_by=["project"]))
        # the aggregate ran on the pool's only connection, and nothing was left on it
        assert eng.pool.checkedin() == 1
        assert _setting_and_pid(eng, "work_mem") == (before, pid)
    finally:
        eng.dispose()


def test_statement_timeout_raises_database_timeout(pg_engine):
    """A COPY waiting on a lock past the engine's statement timeout is canceled by PostgreSQL."""
    _truncate(pg_engine)
    insert_usage(pg_engine, ROWS)
    eng = _own_engine(pg_engine, statement_timeout_ms=100)
    try:
        locker = pg_engine.raw_connection()
        # if the timeout were not applied the read would wait for the lock: release it after 5 s
        release = threading.Timer(5, locker.driver_connection.rollback)
        try:
            locker.cursor().execute("LOCK TABLE usage_daily IN ACCESS EXCLUSIVE MODE")
            release.start()
            started = time.monotonic()
            with pytest.raises(DatabaseTimeout) as info:
                load_usage(eng, ORGS)
            assert time.monotonic() - started < 3
        finally:
            release.cancel()
            locker.rollback()
            locker.close()
        assert "query canceled by the statement timeout (100 ms) on PostgreSQL at" in str(info.value)
        assert "canceling statement due to statement timeout" in str(info.value)
        assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
        # the engine (and its pooled connection) still reads after the canceled COPY
        assert load_usage(eng, ORGS).equals(_expected(ORGS))
    finally:
        eng.dispose()


def test_unreachable_postgresql_is_unavailable_without_password():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    eng = make_engine(f"postgresql://metering:s3cret-pw@127.0.0.1:{port}/billing")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            load_usage(eng, ORGS)
        msg = str(info.value)
        assert not isinstance(info.value, DatabaseTimeout)
        assert "s3cret-pw" not in msg and "is unavailable" in msg and "refused" in msg.lower()
        assert msg.startswith(f"PostgreSQL at postgresql+psycopg://metering:***@127.0.0.1:{port}/billing")
    finally:
        eng.dispose()


def test_read_keeps_row_level_security_scope(pg_engine, fresh):  # noqa: F811
    _seed_two_orgs(pg_engine)  # org-a: 1+2+3, org-b: 1+2+3+4 lookups on 2026-03-10
    setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True)
    reader = fresh["reader_engine"]
    both = ["org-a", "org-b"]
    only_a = load_usage(scoped_engine(reader, {"org-a"}), both)
    assert only_a["org"].to_list() == ["org-a"] and only_a["quantity_micros"].to_list() == [6 * 10**6]
    # no scope on the next read of the same pooled connection: nothing (fail closed)
    assert load_usage(reader, both).height == 0
    every = load_usage(scoped_engine(reader, None), both, group_by=[])
    assert every.rows() == [("org-a", 6 * 10**6, 3), ("org-b", 10 * 10**6, 4)]
    assert load_usage(scoped_engine(reader, set()), both).height == 0
    only_b = load_usage(scoped_engine(reader, {"org-b"}), both, group_by=[])
    assert only_b.rows() == [("org-b", 10 * 10**6, 4)]
    # a reader without SELECT: DatabasePermissionDenied, as on the SQLAlchemy path
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'REVOKE SELECT ON usage_daily FROM "{fresh["reader"]}"')
    try:
        with pytest.raises(DatabasePermissionDenied, match="permission denied for table usage_daily"):
            load_usage(scoped_engine(reader, {"org-a"}), both)
    finally:
        setup_roles(pg_engine, reader=fresh["reader"], writer=fresh["writer"], rls=True)  # grants again
    assert load_usage(scoped_engine(reader, {"org-a"}), both).height == 1


def test_copy_statement_binds_values_through_the_driver(pg_engine):
    stmt = usage_select(["x'); DROP TABLE usage_daily; --"], date(2026, 3, 1), None,
                        filters={"project": ["it's"]})
    with pg_engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        text = copy_statement(pg_engine, stmt, cur)
    assert text.startswith("COPY (SELECT ") and text.endswith(") TO STDOUT (FORMAT csv, ENCODING 'UTF8')")
    assert "'x''); DROP TABLE usage_daily; --'" in text  # quoted by psycopg as one literal
    assert "'it''s'" in text
    assert "%(" not in text
    # and the hostile org name is just an org without usage
    assert load_usage(pg_engine, ["x'); DROP TABLE usage_daily; --"]).height == 0
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM usage_daily")).scalar_one() >= 0


def test_load_usage_keeps_the_scope_rules(engine):
    with pytest.raises(UnscopedQuery):
        load_usage(engine, None)
    with pytest.raises(UnscopedQuery):
        load_usage(engine, "acme")
    with pytest.raises(ValueError, match="unknown filter column 'org'"):
        load_usage(engine, ["acme"], filters={"org": ["x"]})
    with pytest.raises(ValueError, match="unknown group-by column 'quantity_micros'"):
        load_usage(engine, ["acme"], group_by=["quantity_micros"])


def _random_frame(seed: int, n: int) -> pl.DataFrame:
    import random

    rnd = random.Random(seed)
    words = ["", "a", "A", "b", "ab", "a b", "é", "e\u0301", "日本", "z" * 40, "O'Hara", '"q"', "\n"]
    return pl.DataFrame({
        "day": [date(2025, 1, 1) + timedelta(days=rnd.randrange(700)) for _ in range(n)],
        "org": [rnd.choice(words[:4]) for _ in range(n)],
        "project": [rnd.choice(words) for _ in range(n)],
        "retry": [rnd.random() < 0.5 for _ in range(n)],
        "events": [rnd.randrange(-5, 5) for _ in range(n)],
        "quantity_micros": list(range(n)),
    }, schema={"day": pl.Date, "org": pl.String, "project": pl.String, "retry": pl.Boolean,
               "events": pl.Int64, "quantity_micros": pl.Int64})


@pytest.mark.parametrize("seed", range(6))
def test_sort_by_keys_equals_a_plain_sort(seed):
    from queries.usage import sort_by_keys

    df = _random_frame(seed, 3000)
    for keys in (["day", "org", "project", "retry", "events", "quantity_micros"],
                 ["project", "day", "quantity_micros"], ["retry", "org", "quantity_micros"],
                 ["events", "project", "quantity_micros"]):
        got = sort_by_keys(df, keys)
        assert got.equals(df.sort(keys)), keys
        assert sort_by_keys(got, keys).equals(got), keys  # already sorted: kept as it is
        assert sort_by_keys(got.reverse(), keys).equals(got), keys
    # nulls and wide keys fall back to the plain sort
    with_null = df.with_columns(pl.when(pl.col("events") == 0).then(None).otherwise(pl.col("project"))
                                .alias("project"))
    assert sort_by_keys(with_null, ["project", "quantity_micros"]).equals(
        with_null.sort(["project", "quantity_micros"]))
    wide = df.with_columns((pl.col("quantity_micros") * 2**40).alias("big"))
    assert sort_by_keys(wide, ["big", "events"]).equals(wide.sort(["big", "events"]))
