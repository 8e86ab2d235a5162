"""Hypothesis fuzzing of the event parser (CSV and JSON Lines) and of ingesting fuzzed files.

Every generated field value is tagged: ``valid`` (from a pool with its expected typed value),
``invalid`` (known to break that field's rule) or ``random`` (arbitrary unicode, control
characters, huge numbers, floats, injection strings, CSV-breaking quotes and newlines). The
properties: parsing never crashes; accepted + rejected = rows read; every rejected row has a
reason, and a reason naming every invalid-tagged field; a row of only valid values is accepted
with exactly the expected values; every accepted row satisfies the DOMAIN.md rules (checked by
an independent Python validator). Ingesting a fuzzed file stores exactly the accepted rows,
quarantines exactly the rejected ones and leaves another org's data untouched.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.ingest import EVENT_FIELDS, UnreadableInput, ingest_files, parse_events
from queries.schema import ingest_runs, quarantine, usage_daily, usage_events

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
LO, HI = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

# field -> [(text, expected typed value)]; "" means absent (the default applies, or missing)
VALID = {
    "event_id": [("ev-1", "ev-1"), ("é-ü-漢字", "é-ü-漢字"), ('a,"b"\\c\ttab', 'a,"b"\\c\ttab'),
                 ("x" * 128, "x" * 128), ("  padded  ", "padded"), ("'; DROP TABLE usage_events; --",
                                                                    "'; DROP TABLE usage_events; --")],
    "occurred_at": [("2026-03-10T12:00:00Z", T0), ("2026-03-10t12:00:00z", T0),
                    ("2026-03-10 17:30:00+05:30", T0), ("2026-03-10T01:00:00-11:00", T0),
                    ("2026-03-10T12:00:00.123456Z", T0 + timedelta(microseconds=123456)),
                    ("1970-01-01T00:00:00Z", LO), ("2199-12-31T23:59:59Z", datetime(2199, 12, 31, 23, 59, 59,
                                                                                    tzinfo=UTC))],
    "org": [("acme", "acme"), ("beta-2", "beta-2"), ("z" * 63, "z" * 63)],
    "project": [("p1", "p1"), ("0", "0")],
    "environment": [("production", "production"), ("sandbox", "sandbox")],
    "api_key": [("key-1", "key-1"), ("k,1\"x", 'k,1"x'), ("🔑", "🔑")],
    "meter": [("lookup", "lookup"), ("webhook_delivery", "webhook_delivery"), ("assisted_review",
                                                                                "assisted_review")],
    "workload": [("underwriting", "underwriting"), ("bulk-export", "bulk-export")],
    "channel": [("api", "api"), ("operator", "operator"), ("delivery", "delivery")],
    "quantity": [("1", 1_000_000), ("", 1_000_000), ("0", 0), ("0.5", 500_000), (".5", 500_000),
                 ("5.", 5_000_000), ("+3", 3_000_000), (" 7 ", 7_000_000),
                 ("999999999999.999999", 999_999_999_999_999_999), ("000012.340000", 12_340_000)],
    "status": [("success", "success"), ("failed", "failed"), ("", "success")],
    "attempt": [("1", 1), ("", 1), ("2", 2), ("007", 7), ("3.0", 3), ("999999999", 999_999_999)],
}
INVALID = {
    "event_id": ["", "   ", "x" * 129, "a\nb", "a\x00b", "\x1b[31mred", "tab\x7fdel", "c\rr"],
    "occurred_at": ["", "yesterday", "2026-02-30T00:00:00Z", "2026-03-10T12:00:00", "0000-01-01T00:00:00Z",
                    "1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00",
                    "２０２６-03-10T12:00:00Z", "2026-03-10T12:00:00+0530", "1e308", "' OR 1=1 --"],
    "org": ["", "Acme", "a" * 64, "ünï", "a b", "-x", "x;DROP TABLE organizations", "acme\x00"],
    "project": ["", "proj_a", "P", "p/../q"],
    "environment": ["", "staging", "PRODUCTION", "sandbox;--", "production\x00"],
    "api_key": ["", "k" * 129, "k\r\nx", "\x00", "k\x1b"],
    "meter": ["", "lookups", "LOOKUP", "' OR 1=1 --"],
    "workload": ["", "bulk export", "W"],
    "channel": ["", "email", "API"],
    "quantity": ["-1", "-0.5", "1e3", "NaN", "inf", "9" * 13, "1.0000001", "1,5", "0x10", "１", "٣", "abc"],
    "status": ["ok", "SUCCESS", "success\x00"],
    "attempt": ["0", "-1", "1.5", "9" * 10, "２", "x", "+"],
}
NASTY = ["'; DROP TABLE usage_events; --", "\" OR \"\"=\"", "a,b", 'x"y', "line\nbreak", "\r", "\r\n",
         "\\", "\u2028", "\u0085", "\ufeff", "NULL", "null", "\x00", "{}", "[]", "{\"a\":1}", " ", "\t"]

random_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=100, max_size=400),
    st.sampled_from(NASTY),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def field_value(name: str):
    return st.one_of(
        st.sampled_from(VALID[name]).map(lambda v: ("valid", v[0], v[1])),
        st.sampled_from(INVALID[name]).map(lambda v: ("invalid", v, None)),
        random_text.map(lambda v: ("random", v, None)),
    )


def weighted_row():
    # mostly valid values so that whole-valid rows are frequent
    def one(name):
        return st.one_of(
            st.sampled_from(VALID[name]).map(lambda v: ("valid", v[0], v[1])),
            st.sampled_from(VALID[name]).map(lambda v: ("valid", v[0], v[1])),
            st.sampled_from(VALID[name]).map(lambda v: ("valid", v[0], v[1])),
            field_value(name),
        )
    return st.fixed_dictionaries({n: one(n) for n in EVENT_FIELDS})


rows_strategy = st.lists(weighted_row(), min_size=1, max_size=25)


# ---------------------------------------------------------------------------------------------
# writers


def write_csv_rows(path, rows) -> int:
    """Write with the csv module (quotes fields with commas, quotes, newlines). Returns the number
    of records the parser must account for (a record of only empty fields is a blank line)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENT_FIELDS)
    records = 0
    for r in rows:
        values = [r[n][1] for n in EVENT_FIELDS]
        w.writerow(values)
        records += any(v != "" for v in values)
    path.write_bytes(buf.getvalue().encode("utf-8"))
    return records


def write_jsonl_rows(path, rows, *, ensure_ascii: bool, omit_empty: bool) -> int:
    lines = []
    for r in rows:
        obj = {}
        for n in EVENT_FIELDS:
            tag, text, _ = r[n]
            if text == "" and omit_empty:
                continue
            obj[n] = text
        lines.append(json.dumps(obj, ensure_ascii=ensure_ascii))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


# ---------------------------------------------------------------------------------------------
# the independent validator of accepted rows


def check_accepted(good: pl.DataFrame) -> None:
    for r in good.iter_rows(named=True):
        for n in ("event_id", "api_key"):
            v = r[n]
            assert v is not None and 1 <= len(v) <= 128 and v == v.strip() and not CONTROL.search(v), (n, v)
        for n in ("org", "project", "workload"):
            assert SLUG.fullmatch(r[n]), (n, r[n])
        assert r["environment"] in ("sandbox", "production")
        assert r["channel"] in ("api", "operator", "delivery")
        assert r["status"] in ("success", "failed")
        assert r["meter"] in ("lookup", "expanded_history", "report_job", "export_records",
                              "webhook_delivery", "assisted_review")
        assert r["quantity_micros"] is not None and 0 <= r["quantity_micros"] < 10**18
        assert r["attempt"] is not None and 1 <= r["attempt"] <= 999_999_999
        assert r["occurred_at"] is not None and LO <= r["occurred_at"] < HI


def check_parse(parsed, rows, records: int, *, jsonl: bool) -> None:
    good, rejected = parsed.good, parsed.rejected
    assert good.height + rejected.height == records
    assert rejected["reason"].null_count() == 0
    assert all(len(x) > 0 for x in rejected["reason"])
    lines = good["line_number"].to_list() + rejected["line_number"].to_list()
    assert len(lines) == len(set(lines))
    check_accepted(good)
    if not jsonl:
        return  # CSV line numbers shift with quoted newlines; JSON Lines map 1:1 to rows
    assert sorted(lines) == list(range(1, records + 1))
    by_line = {r["line_number"]: r for r in good.iter_rows(named=True)}
    reasons = dict(rejected.select("line_number", "reason").iter_rows())
    for i, row in enumerate(rows, start=1):
        tags = {n: row[n][0] for n in EVENT_FIELDS}
        invalid = [n for n, t in tags.items() if t == "invalid"]
        if invalid:
            assert i in reasons, (i, row)
            for n in invalid:
                assert f"{n}:" in reasons[i], (n, reasons[i])
        elif all(t == "valid" for t in tags.values()):
            assert i in by_line, (i, row, reasons.get(i))
            got = by_line[i]
            for n in EVENT_FIELDS:
                expected = row[n][2]
                key = {"quantity": "quantity_micros"}.get(n, n)
                assert got[key] == expected, (n, got[key], expected)


FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(rows=rows_strategy, ensure_ascii=st.booleans(), omit_empty=st.booleans())
def test_fuzzed_jsonl_never_crashes_and_accounts_for_every_row(tmp_path_factory, rows, ensure_ascii,
                                                               omit_empty):
    path = tmp_path_factory.mktemp("fuzz") / "e.jsonl"
    records = write_jsonl_rows(path, rows, ensure_ascii=ensure_ascii, omit_empty=omit_empty)
    check_parse(parse_events(path), rows, records, jsonl=True)


@FUZZ
@given(rows=rows_strategy)
def test_fuzzed_csv_never_crashes_and_accounts_for_every_row(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "e.csv"
    records = write_csv_rows(path, rows)
    if "\x00" in path.read_text(encoding="utf-8"):
        # NUL bytes are binary content: the whole file is refused before parsing, nothing read
        with pytest.raises(UnreadableInput, match="binary content \\(NUL byte"):
            parse_events(path)
        return
    check_parse(parse_events(path), rows, records, jsonl=False)


json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@FUZZ
@given(objs=st.lists(st.dictionaries(st.sampled_from([*EVENT_FIELDS, "extra", ""]), json_scalar),
                     min_size=1, max_size=20),
       junk=st.lists(st.sampled_from(["{not json", "{", "{}", "[1,2]", "{\"org\": NaN}", "{\"a\":1e999}",
                                      "{\"event_id\": \"\\u0000\"}"]), max_size=3))
def test_fuzzed_json_types_never_crash(tmp_path_factory, objs, junk):
    """Any JSON value where a field belongs (numbers, huge ints, floats, lists, objects, null),
    malformed lines after the first: every line accepted or rejected with a reason."""
    path = tmp_path_factory.mktemp("fuzz") / "e.jsonl"
    lines = [json.dumps(o) for o in objs] + junk
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    parsed = parse_events(path)
    assert parsed.good.height + parsed.rejected.height == len(lines)
    assert parsed.rejected["reason"].null_count() == 0
    check_accepted(parsed.good)


# ---------------------------------------------------------------------------------------------
# ingesting fuzzed files: quarantine = rejected, stored = accepted, another org untouched

OTHER = "other-org"


def seed_other_org(engine, tmp_path) -> tuple:
    path = tmp_path / "other.csv"
    path.write_text(
        ",".join(EVENT_FIELDS) + "\n"
        + "\n".join(f"o{i},2026-03-0{1 + i % 5}T10:00:00Z,{OTHER},p,production,k,lookup,w,api,"
                    f"{i + 1},success,1" for i in range(7)) + "\n"
    )
    (res,) = ingest_files(engine, [path])
    assert res.accepted == 7
    return snapshot_other(engine)


def snapshot_other(engine) -> tuple:
    with engine.connect() as conn:
        ev = conn.execute(sa.select(usage_events.c.event_id, usage_events.c.quantity_micros)
                          .where(usage_events.c.org == OTHER).order_by(usage_events.c.event_id)).all()
        d = usage_daily.c
        daily = conn.execute(sa.select(sa.func.sum(d.quantity_micros), sa.func.sum(d.events))
                             .where(d.org == OTHER)).one()
    return tuple(map(tuple, ev)), tuple(int(x) for x in daily)


def check_ingest(engine, path, records) -> None:
    try:
        parsed = parse_events(path)
    except UnreadableInput:
        return
    (res,) = ingest_files(engine, [path])
    assert res.rejected == parsed.rejected.height
    assert res.rows_read == records
    with engine.connect() as conn:
        run = conn.execute(sa.select(ingest_runs).where(ingest_runs.c.id == res.run_id)).one()._mapping
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(quarantine)
                                   .where(quarantine.c.ingest_run_id == res.run_id)).scalar_one()
        stored = conn.execute(sa.select(sa.func.count()).select_from(usage_events)
                              .where(usage_events.c.ingest_run_id == res.run_id)).scalar_one()
        daily_events = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(usage_daily.c.events), 0))).scalar_one()
        all_events = conn.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar_one()
    assert run["status"] == "committed"
    assert quarantined == parsed.rejected.height == run["rejected"]
    assert stored == res.accepted == run["accepted"]
    assert res.accepted + res.duplicates == parsed.good.height
    assert int(daily_events) == all_events  # the rollup counts every stored event exactly once


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, as_csv=st.booleans())
def test_ingest_fuzzed_file_sqlite(tmp_path_factory, rows, as_csv):
    from queries.engine import make_engine, upgrade

    tmp = tmp_path_factory.mktemp("fuzzdb")
    engine = make_engine(f"sqlite:///{tmp / 'm.db'}")
    upgrade(engine)
    before = seed_other_org(engine, tmp)
    path = tmp / ("e.csv" if as_csv else "e.jsonl")
    records = write_csv_rows(path, rows) if as_csv else write_jsonl_rows(path, rows, ensure_ascii=False,
                                                                          omit_empty=True)
    check_ingest(engine, path, records)
    assert snapshot_other(engine) == before
    engine.dispose()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, as_csv=st.booleans())
def test_ingest_fuzzed_file_postgresql(pg_engine, tmp_path_factory, rows, as_csv):
    """The same on PostgreSQL (NUL, unicode and injection strings reach COPY and the quarantine)."""
    from tests.conftest import _truncate

    _truncate(pg_engine)
    tmp = tmp_path_factory.mktemp("fuzzpg")
    before = seed_other_org(pg_engine, tmp)
    path = tmp / ("e.csv" if as_csv else "e.jsonl")
    records = write_csv_rows(path, rows) if as_csv else write_jsonl_rows(path, rows, ensure_ascii=False,
                                                                          omit_empty=True)
    check_ingest(pg_engine, path, records)
    assert snapshot_other(pg_engine) == before
