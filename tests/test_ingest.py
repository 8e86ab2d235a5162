"""Ingestion: parsing rules (pure), storage on SQLite and PostgreSQL, CLI exit codes."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa

import queries.store
from metering import cli
from metering.ingest import (
    EVENT_FIELDS,
    UnreadableInput,
    ingest_files,
    ingest_frame,
    parse_events,
)
from queries.schema import (
    api_keys,
    ingest_runs,
    organizations,
    projects,
    quarantine,
    restatements,
    usage_daily,
    usage_events,
)
from queries.usage import load_usage

BASE = {
    "event_id": "ev-1",
    "occurred_at": "2026-03-10T12:00:00Z",
    "org": "acme",
    "project": "proj-a",
    "environment": "production",
    "api_key": "key-1",
    "meter": "lookup",
    "workload": "underwriting",
    "channel": "api",
    "quantity": "1",
    "status": "success",
    "attempt": "1",
}
NOW = datetime(2026, 4, 15, 9, 0, tzinfo=UTC)


def write_csv(path, rows, columns=EVENT_FIELDS):
    pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema={c: pl.String for c in columns},
                 orient="row").write_csv(path)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table_rows(engine, table, order_by):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(*order_by))]


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def db_url(engine):
    return engine.url.render_as_string(hide_password=False)


# ---------------------------------------------------------------------------------------------
# every rejection rule (pure parsing)

REJECTIONS = [
    ("event_id", "", "event_id: missing required field"),
    ("event_id", "x" * 129, "event_id: longer than 128 characters (129)"),
    ("occurred_at", "", "occurred_at: missing required field"),
    ("occurred_at", "2026-03-10T12:00:00", "occurred_at: '2026-03-10T12:00:00' has no UTC offset"),
    ("occurred_at", "2026-03-10", "occurred_at: '2026-03-10' has no UTC offset"),
    ("occurred_at", "yesterday", "occurred_at: 'yesterday' is not an RFC 3339 timestamp"),
    ("occurred_at", "2026-03-10T12:00:00+0530", "occurred_at: '2026-03-10T12:00:00+0530' is not an RFC 3339"),
    ("occurred_at", "2026-02-30T00:00:00Z", "occurred_at: '2026-02-30T00:00:00Z' is not a valid date/time"),
    ("occurred_at", "2026-03-10T25:00:00Z", "occurred_at: '2026-03-10T25:00:00Z' is not a valid date/time"),
    ("org", "", "org: missing required field"),
    ("org", "Acme", "org: 'Acme' is not a slug"),
    ("org", "-acme", "org: '-acme' is not a slug"),
    ("org", "a" * 64, "org: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' is not a slug"),
    ("project", "", "project: missing required field"),
    ("project", "proj_a", "project: 'proj_a' is not a slug"),
    ("workload", "", "workload: missing required field"),
    ("workload", "bulk export", "workload: 'bulk export' is not a slug"),
    ("environment", "", "environment: missing required field"),
    ("environment", "staging", "environment: 'staging' is not one of sandbox, production"),
    ("environment", "Production", "environment: 'Production' is not one of sandbox, production"),
    ("meter", "", "meter: missing required field"),
    ("meter", "lookups", "meter: 'lookups' is not one of lookup, expanded_history"),
    ("channel", "", "channel: missing required field"),
    ("channel", "email", "channel: 'email' is not one of api, operator, delivery"),
    ("api_key", "", "api_key: missing required field"),
    ("api_key", "k" * 129, "api_key: longer than 128 characters (129)"),
    ("status", "ok", "status: 'ok' is not one of success, failed"),
    ("quantity", "-1", "quantity: '-1' is negative; must be >= 0"),
    ("quantity", "-0.5", "quantity: '-0.5' is negative"),
    ("quantity", "abc", "quantity: 'abc' is not a decimal number"),
    ("quantity", "1e3", "quantity: '1e3' is not a decimal number"),
    ("quantity", "1,5", "quantity: '1,5' is not a decimal number"),
    ("quantity", "1.0000001", "quantity: '1.0000001' has more than 6 decimal places"),
    ("quantity", "1000000000000", "quantity: '1000000000000' is too large"),
    ("attempt", "0", "attempt: '0' must be >= 1"),
    ("attempt", "1.5", "attempt: '1.5' is not a whole number"),
    ("attempt", "x", "attempt: 'x' is not a whole number"),
    ("attempt", "-2", "attempt: '-2' is not a whole number"),
    ("attempt", "10000000000", "attempt: '10000000000' is too large"),
]


@pytest.mark.parametrize(("field", "value", "reason"), REJECTIONS)
def test_each_rule_rejects_only_its_row_with_a_reason_naming_the_field(tmp_path, field, value, reason):
    bad = {**BASE, "event_id": "bad", field: value}
    if field == "event_id":
        bad["event_id"] = value
    path = write_csv(tmp_path / "e.csv", [BASE, bad, {**BASE, "event_id": "ev-3"}])
    parsed = parse_events(path)
    assert parsed.good["event_id"].to_list() == ["ev-1", "ev-3"]
    assert parsed.rejected.height == 1
    row = parsed.rejected.row(0, named=True)
    assert row["line_number"] == 3  # header is line 1
    assert row["reason"].startswith(reason)
    assert (json.loads(row["raw"])[field] or "") == value


@pytest.mark.parametrize(
    ("field", "value", "column", "expected"),
    [
        ("quantity", "0", "quantity_micros", 0),
        ("quantity", "2.5", "quantity_micros", 2_500_000),
        ("quantity", "0.000001", "quantity_micros", 1),
        ("quantity", ".5", "quantity_micros", 500_000),
        ("quantity", "1.50000000", "quantity_micros", 1_500_000),  # trailing zeros are exact
        ("quantity", "999999999999.999999", "quantity_micros", 999_999_999_999_999_999),
        ("quantity", "", "quantity_micros", 1_000_000),  # default 1
        ("quantity", " 7 ", "quantity_micros", 7_000_000),
        ("attempt", "", "attempt", 1),
        ("attempt", "3", "attempt", 3),
        ("status", "", "status", "success"),
        ("status", "failed", "status", "failed"),
        ("occurred_at", "2026-03-10T12:00:00.25+05:30",
         "occurred_at", datetime(2026, 3, 10, 6, 30, 0, 250000, tzinfo=UTC)),
        ("occurred_at", "2026-03-10 12:00:00z", "occurred_at", datetime(2026, 3, 10, 12, tzinfo=UTC)),
        ("occurred_at", "2026-03-31T23:30:00-02:00", "occurred_at", datetime(2026, 4, 1, 1, 30, tzinfo=UTC)),
        ("event_id", "x" * 128, "event_id", "x" * 128),
        ("org", "a" * 63, "org", "a" * 63),
    ],
)
def test_valid_values_and_defaults_parse_exactly(tmp_path, field, value, column, expected):
    path = write_csv(tmp_path / "e.csv", [{**BASE, field: value}])
    parsed = parse_events(path)
    assert parsed.rejected.height == 0, parsed.rejected["reason"].to_list()
    assert parsed.good[column].to_list() == [expected]


def test_optional_columns_may_be_absent_from_the_csv_header(tmp_path):
    cols = [c for c in EVENT_FIELDS if c not in ("quantity", "status", "attempt")]
    parsed = parse_events(write_csv(tmp_path / "e.csv", [BASE], columns=cols))
    row = parsed.good.row(0, named=True)
    assert (row["quantity_micros"], row["status"], row["attempt"]) == (1_000_000, "success", 1)


def test_several_broken_fields_are_all_named(tmp_path):
    bad = {**BASE, "org": "ACME", "meter": "x", "quantity": "-1"}
    (reason,) = parse_events(write_csv(tmp_path / "e.csv", [bad])).rejected["reason"].to_list()
    assert "org: 'ACME'" in reason and "meter: 'x'" in reason and "quantity: '-1'" in reason


def test_csv_extra_fields_and_blank_lines(tmp_path):
    path = tmp_path / "e.csv"
    header = ",".join(EVENT_FIELDS)
    good = ",".join(BASE[c] for c in EVENT_FIELDS)
    path.write_text(f"{header}\n{good}\n\n{good.replace('ev-1', 'ev-2')},surplus\n")
    parsed = parse_events(path)
    assert parsed.good["event_id"].to_list() == ["ev-1"]
    assert parsed.rejected.select("line_number", "reason").rows() == [
        (4, "row has more fields than the header")]


# ---------------------------------------------------------------------------------------------
# formats


def test_jsonl_mixed_types_and_a_malformed_line(tmp_path):
    lines = [
        json.dumps({**BASE, "event_id": 17, "quantity": 2.5, "attempt": "2"}),
        "{not json",
        "",
        json.dumps({**BASE, "event_id": "ev-b", "quantity": "123456789012.123456", "attempt": 1}),
        json.dumps({**BASE, "event_id": "ev-c", "quantity": None, "status": None}),
        '{"event_id": "ev-d", "occurred_at": "2026-03-10T12:00:00Z", "org": "acme", "project": "p",'
        ' "environment": "sandbox", "api_key": "k", "meter": "lookup", "workload": "w", "channel": "api",'
        ' "quantity": 123456789012.123456}',
        json.dumps({**BASE, "event_id": "ev-e", "quantity": True}),
        json.dumps([1, 2]),
        json.dumps({k: v for k, v in BASE.items() if k != "org"} | {"event_id": "ev-f"}),
    ]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    parsed = parse_events(path)
    good = parsed.good.sort("line_number")
    assert good.select("line_number", "event_id", "quantity_micros", "attempt", "status").rows() == [
        (1, "17", 2_500_000, 2, "success"),
        (4, "ev-b", 123_456_789_012_123_456, 1, "success"),
        (5, "ev-c", 1_000_000, 1, "success"),
        (6, "ev-d", 123_456_789_012_123_456, 1, "success"),  # a JSON number stays exact
    ]
    rejected = dict(parsed.rejected.select("line_number", "reason").rows())
    assert rejected == {
        2: "line is not a JSON object (malformed JSON)",
        7: "quantity: 'true' is not a decimal number",
        8: "line is not a JSON object (malformed JSON)",
        9: "org: missing required field",
    }
    assert parsed.rejected.filter(pl.col("line_number") == 2)["raw"].item() == "{not json"


def test_csv_jsonl_parquet_give_the_same_events(tmp_path):
    rows = [
        {**BASE, "event_id": f"ev-{i}", "quantity": q, "occurred_at": ts}
        for i, (q, ts) in enumerate([("1", "2026-03-01T00:00:00Z"), ("0.25", "2026-03-31T23:30:00-02:00"),
                                     ("12", "2026-02-28T22:00:00+01:00")])
    ]
    csv = parse_events(write_csv(tmp_path / "e.csv", rows)).good
    jsonl = parse_events(write_jsonl(tmp_path / "e.ndjson", rows)).good
    pl.DataFrame(rows).write_parquet(tmp_path / "e.parquet")
    parquet = parse_events(tmp_path / "e.parquet").good
    assert csv.drop("line_number").equals(jsonl.drop("line_number"))
    assert csv.drop("line_number").equals(parquet.drop("line_number"))
    assert csv["quantity_micros"].to_list() == [1_000_000, 250_000, 12_000_000]


def test_typed_parquet_columns(tmp_path):
    def frame(occurred_at):
        return pl.DataFrame({
            **{k: [v, v] for k, v in BASE.items() if k not in ("occurred_at", "quantity", "attempt")},
            "event_id": ["a", "b"],
            "occurred_at": occurred_at,
            "quantity": pl.Series([Decimal("1.5"), Decimal("2")], dtype=pl.Decimal(10, 3)),
            "attempt": [1, 2],
        })

    aware = [datetime(2026, 3, 31, 23, 30, tzinfo=UTC), datetime(2026, 4, 1, 1, tzinfo=UTC)]
    frame(pl.Series(aware).dt.convert_time_zone("America/Sao_Paulo")).write_parquet(tmp_path / "t.parquet")
    parsed = parse_events(tmp_path / "t.parquet")
    assert parsed.rejected.height == 0
    assert parsed.good.select("event_id", "occurred_at", "quantity_micros", "attempt").rows() == [
        ("a", aware[0], 1_500_000, 1), ("b", aware[1], 2_000_000, 2)]

    frame(pl.Series(aware).dt.replace_time_zone(None)).write_parquet(tmp_path / "naive.parquet")
    parsed = parse_events(tmp_path / "naive.parquet")
    assert parsed.good.height == 0
    assert parsed.rejected["line_number"].to_list() == [1, 2]
    assert parsed.rejected["reason"][0].startswith("occurred_at: '2026-03-31T23:30:00' has no UTC offset")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("e.txt", b"x", "unknown file type '.txt'"),
        ("e.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
        ("e.jsonl", b'{"a": "\xff\xfe"}\n', "not readable UTF-8"),
        ("e.csv", b"event_id,org\n1,a\n", "CSV header lacks required column(s) occurred_at, project"),
        ("e.csv", b"", "empty file"),
    ],
)
def test_unreadable_inputs(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_events(path)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableInput, match="no such file"):
        parse_events(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# storage (SQLite and PostgreSQL)


def test_duplicates_inside_a_file_across_files_and_across_orgs(engine, tmp_path):
    a = write_csv(tmp_path / "a.csv", [
        {**BASE, "event_id": "e1", "quantity": "1"},
        {**BASE, "event_id": "e2", "quantity": "2"},
        {**BASE, "event_id": "e1", "quantity": "50"},  # in-file duplicate: first occurrence wins
        {**BASE, "event_id": "e1", "org": "beta", "quantity": "4"},  # other org: not a duplicate
    ])
    b = write_csv(tmp_path / "b.csv", [
        {**BASE, "event_id": "e2", "quantity": "70"},  # already stored
        {**BASE, "event_id": "e3", "quantity": "3"},
    ])
    ra, rb = ingest_files(engine, [a, b], now=NOW)
    assert (ra.accepted, ra.duplicates, ra.rejected) == (3, 1, 0)
    assert (rb.accepted, rb.duplicates, rb.rejected) == (1, 1, 0)
    with engine.connect() as conn:
        stored = dict(((o, e), q) for o, e, q in conn.execute(
            sa.select(usage_events.c.org, usage_events.c.event_id, usage_events.c.quantity_micros)))
    assert stored == {("acme", "e1"): 1_000_000, ("acme", "e2"): 2_000_000, ("acme", "e3"): 3_000_000,
                      ("beta", "e1"): 4_000_000}
    usage = load_usage(engine, ["acme", "beta"])
    assert usage.group_by("org").agg(pl.col("quantity_micros").sum()).sort("org").rows() == [
        ("acme", 6_000_000), ("beta", 4_000_000)]


def test_offsets_across_a_month_edge_land_in_the_utc_day_and_period(engine, tmp_path):
    path = write_csv(tmp_path / "e.csv", [
        {**BASE, "event_id": "late-march-local", "occurred_at": "2026-03-31T23:30:00-02:00", "quantity": "1"},
        {**BASE, "event_id": "early-april-local", "occurred_at": "2026-04-01T00:30:00+02:00",
         "quantity": "2"},
        {**BASE, "event_id": "utc-midnight", "occurred_at": "2026-04-01T00:00:00Z", "quantity": "4"},
    ])
    ingest_files(engine, [path], now=datetime(2026, 5, 2, tzinfo=UTC))
    usage = load_usage(engine, ["acme"]).group_by("day").agg(pl.col("quantity_micros").sum()).sort("day")
    assert usage.rows() == [(date(2026, 3, 31), 2_000_000), (date(2026, 4, 1), 5_000_000)]
    with engine.connect() as conn:
        ts = dict(conn.execute(sa.select(usage_events.c.event_id, usage_events.c.occurred_at)).all())
    as_utc = {k: (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)) for k, v in ts.items()}
    assert as_utc["late-march-local"] == datetime(2026, 4, 1, 1, 30, tzinfo=UTC)
    assert as_utc["early-april-local"] == datetime(2026, 3, 31, 22, 30, tzinfo=UTC)
    # restatements row: (id, ingest_run_id, org, period, events, quantity_micros, recorded_at)
    periods = {r[3]: r[5] for r in table_rows(engine, restatements, [restatements.c.id])}
    assert periods == {"2026-03": 2_000_000, "2026-04": 5_000_000}


def snapshot(engine):
    return {
        t.name: table_rows(engine, t, list(t.primary_key.columns))
        for t in (usage_events, usage_daily, api_keys, organizations, projects)
    } | {"restatements": [r[1:] for r in table_rows(engine, restatements, [restatements.c.id])]}


def test_reingesting_the_same_file_changes_nothing(engine, tmp_path):
    path = write_csv(tmp_path / "e.csv", synthetic_events(200, seed=1))
    (first,) = ingest_files(engine, [path], now=NOW)
    before = snapshot(engine)
    (again,) = ingest_files(engine, [path], now=NOW)
    assert again.accepted == 0
    assert again.duplicates == first.accepted + first.duplicates
    after = snapshot(engine)
    assert after == before


def test_failure_mid_batch_leaves_only_a_failed_run_and_a_rerun_completes(engine, tmp_path, monkeypatch):
    rows = synthetic_events(300, seed=2)
    path = write_csv(tmp_path / "e.csv", rows)

    def crash(conn, run_id):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(queries.store, "after_events_insert", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_files(engine, [path], now=NOW)
    for t in (usage_events, usage_daily, api_keys, organizations, projects, quarantine, restatements):
        assert count(engine, t) == 0, t.name
    (run,) = table_rows(engine, ingest_runs, [ingest_runs.c.id])
    assert run[4] == "failed" and "simulated crash" in run[-1]

    monkeypatch.undo()
    (result,) = ingest_files(engine, [path], now=NOW)
    assert result.accepted == len({(r["org"], r["event_id"]) for r in rows})
    assert_rollup_matches_independent_aggregate(engine, rows)
    statuses = [r[4] for r in table_rows(engine, ingest_runs, [ingest_runs.c.id])]
    assert statuses == ["failed", "committed"]


def test_rollup_equals_direct_aggregation_of_the_input(engine, tmp_path):
    rows = synthetic_events(1500, seed=3)
    half = len(rows) // 2
    a = write_csv(tmp_path / "a.csv", rows[: half + 100])  # overlapping 100 rows across files
    b = write_jsonl(tmp_path / "b.jsonl", rows[half:])
    ingest_files(engine, [a, b], now=NOW)
    assert_rollup_matches_independent_aggregate(engine, rows)
    # and the rollup equals a direct aggregation of usage_events in the store
    with engine.connect() as conn:
        ev = conn.execute(sa.select(sa.func.count(), sa.func.sum(usage_events.c.quantity_micros))).one()
        d = usage_daily.c
        ro = conn.execute(sa.select(sa.func.sum(d.events), sa.func.sum(d.quantity_micros))).one()
    assert tuple(ev) == tuple(ro)


def test_api_keys_orgs_and_projects_are_upserted(engine, tmp_path):
    first = write_csv(tmp_path / "a.csv", [
        {**BASE, "event_id": "1", "occurred_at": "2026-03-05T00:00:00Z", "environment": "sandbox",
         "project": "p1"},
        {**BASE, "event_id": "2", "occurred_at": "2026-03-09T00:00:00Z", "environment": "production",
         "project": "p2"},
    ])
    second = write_csv(tmp_path / "b.csv", [
        {**BASE, "event_id": "3", "occurred_at": "2026-03-07T00:00:00Z"},
        {**BASE, "event_id": "4", "occurred_at": "2026-03-20T10:00:00+02:00"},
    ])
    ingest_files(engine, [first, second], now=NOW)
    (key,) = table_rows(engine, api_keys, [api_keys.c.org])

    def utc(v):
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    assert key[:4] == ("acme", "key-1", "p1", "sandbox")  # project/environment of its first event
    assert utc(key[4]) == datetime(2026, 3, 5, tzinfo=UTC)
    assert utc(key[5]) == datetime(2026, 3, 20, 8, tzinfo=UTC)
    assert [r[0] for r in table_rows(engine, organizations, [organizations.c.org])] == ["acme"]
    assert [r[:2] for r in table_rows(engine, projects, [projects.c.project])] == [
        ("acme", "p1"), ("acme", "p2"), ("acme", "proj-a")]


def test_restatements_are_recorded_for_late_events_only(engine, tmp_path):
    path = write_csv(tmp_path / "e.csv", [
        {**BASE, "event_id": "feb", "occurred_at": "2026-02-27T10:00:00Z", "quantity": "2"},
        {**BASE, "event_id": "mar1", "occurred_at": "2026-03-02T10:00:00Z", "quantity": "1.5"},
        {**BASE, "event_id": "mar2", "occurred_at": "2026-03-31T23:59:59Z", "quantity": "1"},
        {**BASE, "event_id": "beta-mar", "org": "beta", "occurred_at": "2026-03-02T10:00:00Z"},
        {**BASE, "event_id": "apr", "occurred_at": "2026-04-01T00:00:00Z", "quantity": "9"},  # open period
    ])
    (result,) = ingest_files(engine, [path], now=NOW)
    got = sorted((r[2], r[3], r[4], r[5]) for r in table_rows(engine, restatements, [restatements.c.id]))
    assert got == [("acme", "2026-02", 1, 2_000_000), ("acme", "2026-03", 2, 2_500_000),
                   ("beta", "2026-03", 1, 1_000_000)]
    assert {r[1] for r in table_rows(engine, restatements, [restatements.c.id])} == {result.run_id}
    ingest_files(engine, [path], now=NOW)  # duplicates are not restatements
    assert count(engine, restatements) == 3


def test_ingest_frame_with_typed_columns(engine):
    frame = pl.DataFrame({
        **{k: [v, v, v] for k, v in BASE.items() if k not in ("occurred_at", "quantity", "attempt")},
        "event_id": ["a", "b", "a"],
        "occurred_at": [datetime(2026, 4, 2, tzinfo=UTC)] * 3,
        "quantity": pl.Series([Decimal("0.5"), Decimal("3"), Decimal("7")], dtype=pl.Decimal(12, 6)),
        "attempt": [1, 1, 1],
        "meter": ["lookup", "nope", "lookup"],
    })
    result = ingest_frame(engine, frame, "demo", now=NOW)
    assert (result.accepted, result.duplicates, result.rejected) == (1, 1, 1)
    assert load_usage(engine, ["acme"])["quantity_micros"].to_list() == [500_000]


def test_tricky_text_survives_bulk_load(engine, tmp_path):
    event_id = 'a,"b"\\c\ttab é'
    path = write_jsonl(tmp_path / "e.jsonl", [{**BASE, "event_id": event_id, "api_key": "k,1\"x"}])
    (result,) = ingest_files(engine, [path], now=NOW)
    assert result.accepted == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(usage_events.c.event_id, usage_events.c.api_key)).one() == (
            event_id, 'k,1"x')


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_exit_codes(engine, tmp_path, capsys):
    good = write_csv(tmp_path / "good.csv", [BASE, {**BASE, "event_id": "ev-2"}])
    mixed = write_csv(tmp_path / "mixed.csv", [{**BASE, "event_id": "ev-3"}, {**BASE, "event_id": "ev-4",
                                                                            "meter": "bogus"}])
    url = db_url(engine)
    assert cli.main(["--database-url", url, "ingest", str(good)]) == 0
    out = capsys.readouterr().out
    assert "2 accepted, 0 duplicate, 0 rejected" in out
    assert cli.main(["--database-url", url, "ingest", str(good)]) == 0  # all duplicates is fine
    assert "0 accepted, 2 duplicate, 0 rejected" in capsys.readouterr().out
    assert cli.main(["--database-url", url, "ingest", str(mixed)]) == 3
    out = capsys.readouterr().out
    assert "1 accepted, 0 duplicate, 1 rejected" in out
    assert "line 3: meter: 'bogus' is not one of" in out
    assert count(engine, usage_events) == 3

    runs_before = count(engine, ingest_runs)
    broken = tmp_path / "broken.csv"
    broken.write_text("event_id,org\nx,acme\n")
    assert cli.main(["--database-url", url, "ingest", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "lacks required column(s)" in err and "nothing written" in err
    assert count(engine, ingest_runs) == runs_before
    assert count(engine, usage_events) == 3
    assert cli.main(["--database-url", url, "ingest", str(tmp_path / "missing.jsonl")]) == 2


# ---------------------------------------------------------------------------------------------
# independent expectations


def synthetic_events(n: int, seed: int) -> list[dict]:
    """Messy but valid events with duplicates, offsets, retries, failures, fractional quantities."""
    rnd = random.Random(seed)
    start = datetime(2026, 2, 20, tzinfo=UTC)
    offsets = ["Z", "+00:00", "-02:00", "+05:30", "+14:00", "-11:00"]
    rows = []
    for _ in range(n):
        ts = start + timedelta(seconds=rnd.randrange(0, 45 * 86400))
        off = rnd.choice(offsets)
        if off in ("Z", "+00:00"):
            local, text_off = ts, off
        else:
            sign = 1 if off[0] == "+" else -1
            delta = timedelta(hours=int(off[1:3]), minutes=int(off[4:6])) * sign
            local, text_off = ts + delta, off
        meter = rnd.choice(["lookup", "webhook_delivery", "report_job", "export_records"])
        event_id = f"e{rnd.randrange(0, int(n * 0.9))}"  # ~10% collide
        rows.append({
            "event_id": event_id,
            "occurred_at": local.replace(tzinfo=None).isoformat() + text_off,
            "org": rnd.choice(["acme", "beta"]),
            "project": rnd.choice(["p1", "p2"]),
            "environment": rnd.choice(["sandbox", "production"]),
            "api_key": rnd.choice(["k1", "k2", "k3"]),
            "meter": meter,
            "workload": "underwriting",
            "channel": "delivery" if meter == "webhook_delivery" else "api",
            "quantity": rnd.choice(["1", "2", "0.5", "1.234567", "100"]),
            "status": rnd.choice(["success", "success", "success", "failed"]),
            "attempt": rnd.choice(["1", "1", "2"]) if meter == "webhook_delivery" else "1",
        })
    return rows


def assert_rollup_matches_independent_aggregate(engine, rows):
    """Expected totals from the input rows with the standard library (first occurrence wins)."""
    seen, expected = set(), {}
    for r in rows:
        if (r["org"], r["event_id"]) in seen:
            continue
        seen.add((r["org"], r["event_id"]))
        day = datetime.fromisoformat(r["occurred_at"]).astimezone(UTC).date()
        attempt = int(r["attempt"])
        eligible = r["status"] == "success" and (r["meter"] != "webhook_delivery" or attempt == 1)
        key = (day, r["org"], r["api_key"], r["meter"], eligible)
        micros = int(Decimal(r["quantity"]) * 1_000_000)
        q, e = expected.get(key, (0, 0))
        expected[key] = (q + micros, e + 1)
    usage = (
        load_usage(engine, ["acme", "beta"])
        .group_by("day", "org", "api_key", "meter", "eligible")
        .agg(pl.col("quantity_micros").sum(), pl.col("events").sum())
    )
    got = {(d, o, k, m, el): (q, e) for d, o, k, m, el, q, e in usage.rows()}
    assert got == expected


def test_fast_path_and_full_path_agree(tmp_path):
    """Canonical rows take the fast path; the same rows padded with blanks take the full path."""
    rows = [
        {**BASE, "event_id": f"e{i}", "occurred_at": f"2026-03-{1 + i % 28:02d}T{i % 24:02d}:05:09Z",
         "quantity": q, "attempt": a, "status": st}
        for i, (q, a, st) in enumerate([("1", "1", "success"), ("0.000001", "2", "failed"), ("", "", ""),
                                        ("999999999999.999999", "999999999", "success"), ("12.5", "3", "")])
    ]
    fast = parse_events(write_csv(tmp_path / "fast.csv", rows)).good
    padded = [{k: (f" {v} " if k in ("event_id", "quantity", "org") and v else v) for k, v in r.items()}
              for r in rows]
    full = parse_events(write_csv(tmp_path / "full.csv", padded)).good
    assert fast.height == len(rows)
    assert fast.equals(full)
    assert fast["quantity_micros"].to_list() == [1_000_000, 1, 1_000_000, 999_999_999_999_999_999, 12_500_000]


def test_frame_and_sql_derivations_give_the_same_tables(engine, tmp_path, monkeypatch):
    """Rollup, keys, orgs/projects and restatements: Polars path (all events new) == SQL path."""
    path = write_csv(tmp_path / "e.csv", synthetic_events(400, seed=5))
    ingest_files(engine, [path], now=NOW)
    from_frame = snapshot(engine)
    for t in (usage_events, usage_daily, api_keys, organizations, projects, restatements):
        with engine.begin() as conn:
            conn.execute(t.delete())
    monkeypatch.setattr(queries.store, "DERIVE_FROM_FRAME", False)
    ingest_files(engine, [path], now=NOW)
    from_sql = snapshot(engine)
    # restatement rows differ only in their run id
    for snap in (from_frame, from_sql):
        snap["restatements"] = sorted(r[1:] for r in snap["restatements"])
        snap.pop("usage_events")
    assert from_sql == from_frame
    assert len(from_frame["usage_daily"]) > 50 and len(from_frame["restatements"]) == 4


@pytest.mark.parametrize("prefix", ["", "\ufeff"])
def test_jsonl_blank_lines_crlf_and_bom(tmp_path, prefix):
    rows = [{**BASE, "event_id": f"e{i}", "quantity": 2.5 if i else "7"} for i in range(3)]
    text = prefix + json.dumps(rows[0]) + "\r\n\r\n" + json.dumps(rows[1]) + "\n\n\n" + json.dumps(rows[2])
    path = tmp_path / "e.jsonl"
    path.write_bytes(text.encode())
    parsed = parse_events(path)
    assert parsed.rejected.height == 0
    assert parsed.good.select("line_number", "event_id", "quantity_micros").rows() == [
        (1, "e0", 7_000_000), (3, "e1", 2_500_000), (6, "e2", 2_500_000)]


# ---------------------------------------------------------------------------------------------
# hardening: field limits, file size cap, content sniffing

HARDENING_REJECTIONS = [
    ("event_id", "a\x00b", "event_id: 'a\\0b' contains a control character"),
    ("event_id", "line\nbreak", "event_id: 'line\\nbreak' contains a control character"),
    ("event_id", "\x1b[2Jwipe", "event_id: '\ufffd[2Jwipe' contains a control character"),
    ("api_key", "k\x7f", "api_key: 'k\ufffd' contains a control character"),
    ("occurred_at", "1969-12-31T23:59:59Z", "occurred_at: '1969-12-31T23:59:59Z' is outside 1970-2199 (UTC)"),
    ("occurred_at", "2200-01-01T00:00:00Z", "occurred_at: '2200-01-01T00:00:00Z' is outside 1970-2199"),
    ("occurred_at", "9999-12-31T23:59:59-14:00", "occurred_at: '9999-12-31T23:59:59-14:00' is outside"),
    ("occurred_at", "0000-01-01T00:00:00Z", "occurred_at: '0000-01-01T00:00:00Z' is "),
    ("occurred_at", "２０２６-03-10T12:00:00Z", "occurred_at: '２０２６-03-10T12:00:00Z' is not an RFC 3339"),
    ("quantity", "１", "quantity: '１' is not a decimal number"),
    ("quantity", "٣.٥", "quantity: '٣.٥' is not a decimal number"),
    ("attempt", "２", "attempt: '２' is not a whole number"),
    ("org", "acme\x00", "org: 'acme\\0' is not a slug"),
]


@pytest.mark.parametrize(("field", "value", "reason"), HARDENING_REJECTIONS)
def test_field_limits_quarantine_the_row_naming_the_field(engine, tmp_path, field, value, reason):
    """JSON Lines carries any character (\\u0000 too); the row is rejected with a readable reason,
    stored in quarantine on both databases (NUL kept visible as \\0), the good rows stored."""
    path = write_jsonl(tmp_path / "e.jsonl", [BASE, {**BASE, "event_id": "bad", field: value},
                                              {**BASE, "event_id": "ev-3"}])
    (result,) = ingest_files(engine, [path], now=NOW)
    assert (result.accepted, result.rejected) == (2, 1)
    (q,) = table_rows(engine, quarantine, [quarantine.c.id])
    line, org, raw, stored_reason = q[3], q[4], q[5], q[6]
    assert line == 2 and stored_reason.startswith(reason), stored_reason
    assert "\x00" not in raw and json.loads(raw.replace("\\0", "\\u0000"))[field] == value
    assert "\x00" not in (org or "")


def test_huge_raw_rows_are_kept_in_quarantine_up_to_a_marked_cut(engine, tmp_path):
    huge = "x" * 200_000
    path = write_jsonl(tmp_path / "e.jsonl", [{**BASE, "event_id": huge}])
    (result,) = ingest_files(engine, [path], now=NOW)
    assert result.rejected == 1
    (q,) = table_rows(engine, quarantine, [quarantine.c.id])
    assert q[6].startswith("event_id: longer than 128 characters (200000)")
    raw = q[5]
    assert raw.endswith(f"... (cut at 65536 of {len(json.dumps({**BASE, 'event_id': huge}))} characters)")
    line = json.dumps({**BASE, "event_id": huge})
    assert raw[:65_536] == line[:65_536]
    assert len(raw) == 65_536 + len(" (cut at 65536 of 200259 characters)") + 3


def test_size_cap_is_checked_before_reading(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "e.csv", [BASE] * 20)
    size = path.stat().st_size
    with pytest.raises(UnreadableInput, match=f"{size:,} bytes is above the ingest size cap of 100 bytes"):
        parse_events(path, max_bytes=100)
    assert parse_events(path, max_bytes=size).good.height == 20
    monkeypatch.setenv("METERING_MAX_INGEST_BYTES", "1K")
    assert size > 1024
    with pytest.raises(UnreadableInput, match="above the ingest size cap of 1,024 bytes"):
        parse_events(path)
    monkeypatch.setenv("METERING_MAX_INGEST_BYTES", "lots")
    with pytest.raises(UnreadableInput, match="METERING_MAX_INGEST_BYTES: 'lots' is not a size"):
        parse_events(path)


def test_cli_max_bytes_refuses_the_file_and_writes_nothing(engine, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METERING_MAX_INGEST_BYTES", raising=False)
    path = write_csv(tmp_path / "e.csv", [BASE, {**BASE, "event_id": "ev-2"}])
    url = db_url(engine)
    assert cli.main(["--database-url", url, "ingest", "--max-bytes", "100", str(path)]) == 2
    err = capsys.readouterr().err
    assert "above the ingest size cap of 100 bytes" in err and "nothing written" in err
    assert count(engine, ingest_runs) == 0 and count(engine, usage_events) == 0
    assert cli.main(["--database-url", url, "ingest", "--max-bytes", "1M", str(path)]) == 0
    assert count(engine, usage_events) == 2
    with pytest.raises(SystemExit):
        cli.main(["--database-url", url, "ingest", "--max-bytes", "0", str(path)])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("png.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "binary content (a PNG image), not CSV text"),
        ("gz.csv", b"\x1f\x8b\x08\x00" + b"\x00" * 20, "binary content (gzip data), not CSV text"),
        ("pq.csv", b"PAR1" + b"\x00" * 20 + b"PAR1", "binary content (a Parquet file), not CSV text"),
        ("nul.csv", b"event_id,occurred_at\n\x00\x01\x02", "binary content (NUL byte at offset 21)"),
        ("latin1.csv", "event_id,occurred_at\ncaf\xe9\n".encode("latin-1"),
         "not readable UTF-8 text (invalid byte at offset 24)"),
        ("zip.jsonl", b"PK\x03\x04rest", "binary content (a zip archive), not JSON Lines text"),
        ("array.jsonl", b'\n  [{"event_id": "a"}]\n', "does not start with a JSON object ('{', found '[')"),
        ("csv.jsonl", b"event_id,org\n", "does not start with a JSON object ('{', found 'e')"),
        ("short.parquet", b"PAR1", "not a readable Parquet file (no PAR1 magic at its start and end)"),
        ("csv.parquet", b"event_id,org\nx,y\n", "not a readable Parquet file (no PAR1 magic"),
        ("zip.parquet", b"PK\x03\x04" + b"\x00" * 20,
         "no PAR1 magic at its start and end); it looks like a zip archive"),
    ],
)
def test_content_must_match_the_extension(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableInput) as exc:
        parse_events(path)
    assert message in str(exc.value) and name in str(exc.value)


def test_sniffing_accepts_real_files_bom_and_blank_lead(tmp_path):
    rows = [BASE, {**BASE, "event_id": "ev-2"}]
    csv_path = write_csv(tmp_path / "e.csv", rows)
    jl = tmp_path / "e.jsonl"
    jl.write_text("\ufeff\n\n" + "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pq = tmp_path / "e.parquet"
    pl.DataFrame(rows).write_parquet(pq)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for p in (csv_path, jl, pq):
        assert parse_events(p).good["event_id"].to_list() == ["ev-1", "ev-2"], p
    assert parse_events(empty).good.height == 0


def test_quarantine_org_is_cut_after_escaping_nul(engine, tmp_path):
    """Found by the fuzz test: an org of 150 NULs escapes to 300 characters; the stored org must
    still fit its varchar(200) (PostgreSQL refused the whole batch before)."""
    path = write_jsonl(tmp_path / "e.jsonl", [{**BASE, "org": "\x00" * 150}, {**BASE, "event_id": "ok"}])
    (result,) = ingest_files(engine, [path], now=NOW)
    assert (result.accepted, result.rejected) == (1, 1)
    (q,) = table_rows(engine, quarantine, [quarantine.c.id])
    assert q[4] == "\\0" * 100
    assert q[6] == "org: '" + "\\0" * 57 + "...' is not a slug (lowercase letters, digits, '-', 1-63 chars)"
