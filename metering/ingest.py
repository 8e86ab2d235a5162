"""Usage-event ingestion: read event files, validate every DOMAIN.md rule, dedupe, store.

Owns the `ingest FILE...` command, ``parse_events`` (CSV, JSON Lines, Parquet, by extension),
``ingest_frame`` and ``ingest_files``. Validation is vectorised in Polars: every field is read
as text first, so one bad value rejects only its own row, with a reason naming the field and
the value. Storage (one transaction per file, idempotent on (org, event_id)) is in
``queries.store``.
"""

from __future__ import annotations

import codecs
import getpass
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from metering.domain import (
    API_KEY,
    CHANNEL,
    CHANNELS,
    ENVIRONMENT,
    ENVIRONMENTS,
    METER,
    METER_NAMES,
    ORG,
    PROJECT,
    QUANTITY_MICROS,
    QUANTITY_SCALE,
    STATUS,
    STATUSES,
    WORKLOAD,
)
from metering.periods import utcnow

EVENT_ID = "event_id"
OCCURRED_AT = "occurred_at"
QUANTITY = "quantity"
ATTEMPT = "attempt"
LINE_NUMBER = "line_number"
RAW = "raw"
TYPED_TS = "_ts_typed"
REASON = "reason"

REQUIRED_FIELDS = (EVENT_ID, OCCURRED_AT, ORG, PROJECT, ENVIRONMENT, API_KEY, METER, WORKLOAD, CHANNEL)
DEFAULTS = {QUANTITY: "1", STATUS: "success", ATTEMPT: "1"}
EVENT_FIELDS = (*REQUIRED_FIELDS, QUANTITY, STATUS, ATTEMPT)

MAX_ID_CHARS = 128
MAX_QUANTITY_INT_DIGITS = 12  # quantity < 10**12: a single event bigger than that is a data error
MAX_ATTEMPT_DIGITS = 9
PROGRESS_MIN_ROWS = 100_000
# occurred_at outside [1970, 2200) is a data error (and year 0 / 5-digit years break storage)
MIN_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_OCCURRED_AT = datetime(2200, 1, 1, tzinfo=UTC)
_CONTROL = r"[\x00-\x08\x0A-\x1F\x7F]"  # C0 controls and DEL, except tab

# file-level limits: a size cap checked before reading, and content sniffing
MAX_BYTES_ENV = "METERING_MAX_INGEST_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB
SNIFF_BYTES = 64 * 1024
_USE_DEFAULT = object()

GOOD_SCHEMA: dict[str, pl.DataType] = {
    LINE_NUMBER: pl.Int64(),
    EVENT_ID: pl.String(),
    OCCURRED_AT: pl.Datetime("us", "UTC"),
    ORG: pl.String(),
    PROJECT: pl.String(),
    ENVIRONMENT: pl.String(),
    API_KEY: pl.String(),
    METER: pl.String(),
    WORKLOAD: pl.String(),
    CHANNEL: pl.String(),
    QUANTITY_MICROS: pl.Int64(),
    STATUS: pl.String(),
    ATTEMPT: pl.Int32(),
}
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    LINE_NUMBER: pl.Int64(),
    ORG: pl.String(),
    RAW: pl.String(),
    REASON: pl.String(),
}

EXIT_OK = 0
EXIT_UNREADABLE = 2
EXIT_SOME_REJECTED = 3


class UnreadableInput(Exception):
    """The file as a whole cannot be read (missing, unknown extension, corrupt, bad header)."""


@dataclass(frozen=True)
class ParsedEvents:
    """``good``: valid rows (GOOD_SCHEMA, file order, duplicates still in).
    ``rejected``: one row per rejected line (REJECTED_SCHEMA)."""

    good: pl.DataFrame
    rejected: pl.DataFrame


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: int
    run_id: int
    source: str = ""
    rows_read: int = 0
    first_reasons: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# public API


def parse_events(path: str | Path, *, max_bytes: int | None | object = _USE_DEFAULT) -> ParsedEvents:
    """Read and validate one event file, chosen by extension: .csv, .jsonl/.ndjson, .parquet.

    Before reading, the file must be at most ``max_bytes`` (default ``default_max_bytes()``:
    $METERING_MAX_INGEST_BYTES or 2 GiB; None = no cap) and its content must match its
    extension: Parquet starts and ends with ``PAR1``; CSV and JSON Lines are UTF-8 text without
    NUL bytes in their first 64 KiB, a JSON Lines file's first non-blank character is ``{``,
    a CSV header names every required column.

    Line numbers of rejected rows: CSV counts physical lines with the header as line 1, so the
    first data row is line 2 (a quoted value spanning several lines shifts later numbers);
    JSON Lines counts physical lines from 1 (blank lines are skipped but counted); Parquet
    counts rows from 1. Blank CSV rows and blank JSON lines are ignored, not rejected.

    Raises UnreadableInput when the file as a whole cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableInput(f"{path}: no such file")
    if not path.is_file():
        raise UnreadableInput(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl", ".ndjson", ".parquet"):
        _check_file(path, suffix, default_max_bytes() if max_bytes is _USE_DEFAULT else max_bytes)
    if suffix == ".csv":
        text = _read_csv_text(path)
    elif suffix in (".jsonl", ".ndjson"):
        text = _read_jsonl_text(path)
    elif suffix == ".parquet":
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several error types for corrupt files
            raise UnreadableInput(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc
        text = _frame_as_text(df, str(path))
    else:
        raise UnreadableInput(
            f"{path}: unknown file type {suffix or '(no extension)'!r}; "
            "expected .csv, .jsonl, .ndjson or .parquet"
        )
    return validate_text(text)


def events_from_frame(events: pl.DataFrame, source: str = "frame") -> ParsedEvents:
    """Validate an in-memory frame in the event-file schema (string or typed columns).

    Typed columns are accepted: occurred_at as a time-zone-aware Datetime (a naive one is
    rejected like a naive timestamp), quantity as integer/Decimal/string, attempt as integer.
    Line numbers count rows from 1.
    """
    return validate_text(_frame_as_text(events, source))


def ingest_frame(
    engine, events: pl.DataFrame, source: str, *, now: datetime | None = None,
    run_by: str | None = None,
) -> IngestResult:
    """Validate and store a frame of events as one ingest run (one transaction)."""
    parsed = events_from_frame(events, source)
    return _store(engine, parsed, source, now=now, run_by=run_by, rows_read=events.height)


def ingest_files(
    engine, paths: Iterable[str | Path], *, progress: bool = False, now: datetime | None = None,
    run_by: str | None = None, max_bytes: int | None | object = _USE_DEFAULT,
) -> list[IngestResult]:
    """Ingest each file as its own run and transaction. Raises UnreadableInput on the first
    unreadable file (files before it stay committed; nothing of that file is written)."""
    results = []
    for p in paths:
        parsed = parse_events(p, max_bytes=max_bytes)
        rows = parsed.good.height + parsed.rejected.height
        results.append(
            _store(engine, parsed, str(p), now=now, run_by=run_by, rows_read=rows, progress=progress)
        )
    return results


def validate_text(text: pl.DataFrame) -> ParsedEvents:
    """Validate a frame of text columns (``line_number``, the event fields, optional ``raw``).

    A field column may be absent (every row then misses that field). Values are trimmed;
    an empty value counts as missing. Returns good rows typed per GOOD_SCHEMA.
    """
    df = text
    original = [c for c in df.columns if c in EVENT_FIELDS or c == "_extra"]
    for name in EVENT_FIELDS:
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    df = df.with_columns(pl.col(n).cast(pl.String) for n in EVENT_FIELDS)
    # Fast path: rows in the canonical form (no surrounding blanks, `...THH:MM:SSZ`, plain
    # quantities) are typed with cheap expressions. Every other row goes through the full,
    # lenient path below, which is the reference: the fast path accepts a subset of what it
    # accepts, with identical values.
    fast = df.with_columns(_fast_columns(TYPED_TS in df.columns)).with_columns(
        _fast_ok("_parse_error" in df.columns).alias("_fast_ok")
    )
    fast_good = fast.lazy().filter(pl.col("_fast_ok")).select(
        pl.col(LINE_NUMBER).cast(pl.Int64),
        pl.col(EVENT_ID),
        pl.col("_fast_ts").alias(OCCURRED_AT),
        *[pl.col(n) for n in (ORG, PROJECT, ENVIRONMENT, API_KEY, METER, WORKLOAD, CHANNEL)],
        pl.col("_fast_micros").alias(QUANTITY_MICROS),
        pl.col(STATUS).fill_null(DEFAULTS[STATUS]),
        pl.col("_fast_attempt").alias(ATTEMPT),
    ).cast(GOOD_SCHEMA).collect()
    df = fast.filter(~pl.col("_fast_ok")).drop(
        "_fast_ts", "_fast_micros", "_fast_attempt", "_fast_ok", TYPED_TS, strict=False
    )
    df = df.with_columns(
        [_blank_to_null(pl.col(n).str.strip_chars()).alias(f"_{n}") for n in EVENT_FIELDS]
    )
    parse_error = pl.col("_parse_error") if "_parse_error" in df.columns else pl.lit(None, pl.String)
    rules = _rules()
    checked = df.with_columns(_parsed_columns()).with_columns(
        (parse_error.is_not_null() | _broken(rules)).alias("_broken")
    )
    good = checked.filter(~pl.col("_broken")).select(
        pl.col(LINE_NUMBER).cast(pl.Int64),
        pl.col(f"_{EVENT_ID}").alias(EVENT_ID),
        pl.col("_ts").alias(OCCURRED_AT),
        *[pl.col(f"_{n}").alias(n) for n in (ORG, PROJECT, ENVIRONMENT, API_KEY, METER, WORKLOAD, CHANNEL)],
        pl.col("_micros").alias(QUANTITY_MICROS),
        pl.col(f"_{STATUS}").fill_null(DEFAULTS[STATUS]).alias(STATUS),
        pl.col("_attempt_int").cast(pl.Int32).alias(ATTEMPT),
    )
    bad = checked.filter(pl.col("_broken")).with_columns(
        pl.when(parse_error.is_not_null()).then(parse_error).otherwise(_reason(rules)).alias(REASON)
    )
    raw_expr = (
        pl.col(RAW) if RAW in bad.columns
        else pl.struct(original).struct.json_encode()
    )
    rejected = bad.select(
        pl.col(LINE_NUMBER).cast(pl.Int64),
        pl.col(f"_{ORG}").alias(ORG),
        raw_expr.alias(RAW),
        pl.col(REASON),
    )
    good = good.cast(GOOD_SCHEMA)
    good = fast_good.merge_sorted(good, key=LINE_NUMBER) if good.height else fast_good
    return ParsedEvents(good=good, rejected=rejected.cast(REJECTED_SCHEMA).sort(LINE_NUMBER))


def default_max_bytes() -> int:
    """The ingest size cap: $METERING_MAX_INGEST_BYTES (e.g. 500000000, 512M, 2G) or 2 GiB."""
    env = os.environ.get(MAX_BYTES_ENV)
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(env)
    except ValueError as exc:
        raise UnreadableInput(f"{MAX_BYTES_ENV}: {exc}") from None


def parse_size(text: str) -> int:
    """A byte count: digits with an optional K, M, G or T suffix (binary: 1K = 1024), > 0."""
    m = re.fullmatch(r"\s*([0-9]{1,15})\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"{str(text)[:40]!r} is not a size like 2147483648, 512M or 2G")
    value = int(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " ")
    if value <= 0:
        raise ValueError(f"{text!r} must be > 0 bytes")
    return value


def _size_arg(text: str) -> int:
    import argparse

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub) -> None:
    p = sub.add_parser(
        "ingest", help="load usage events from CSV, JSON Lines or Parquet files",
        description="Load usage events; prints accepted, duplicate and rejected counts. Exit 0: all "
        "accepted or duplicate; 3: some rows rejected (good rows kept); 2: unreadable input.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--max-bytes", type=_size_arg, default=None, metavar="SIZE",
                   help=f"refuse files larger than this, e.g. 512M (default: ${MAX_BYTES_ENV}, else 2G)")
    p.set_defaults(func=_cmd_ingest)


# ---------------------------------------------------------------------------------------------
# file-level checks: size cap and content sniffing (before any parsing)

_MAGIC = ((b"PAR1", "a Parquet file"), (b"\x1f\x8b", "gzip data"), (b"PK\x03\x04", "a zip archive"),
          (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"), (b"\x7fELF", "an executable"))


def _check_file(path: Path, suffix: str, max_bytes: int | None) -> None:
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise UnreadableInput(
            f"{path}: {size:,} bytes is above the ingest size cap of {max_bytes:,} bytes "
            f"(--max-bytes or {MAX_BYTES_ENV})"
        )
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
            tail = b""
            if suffix == ".parquet" and size >= 8:
                f.seek(-4, os.SEEK_END)
                tail = f.read(4)
    except OSError as exc:
        raise UnreadableInput(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if suffix == ".parquet":
        if head[:4] != b"PAR1" or tail != b"PAR1":
            raise UnreadableInput(f"{path}: not a readable Parquet file (no PAR1 magic at its start and end)"
                                  + _looks_like(head))
        return
    kind = "CSV" if suffix == ".csv" else "JSON Lines"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise UnreadableInput(f"{path}: binary content ({what}), not {kind} text")
    if b"\x00" in head:
        raise UnreadableInput(f"{path}: binary content (NUL byte at offset {head.index(0)}), not {kind} text")
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) == size)
    except UnicodeDecodeError as exc:
        raise UnreadableInput(
            f"{path}: not readable UTF-8 text (invalid byte at offset {exc.start}), not {kind} text"
        ) from exc
    if suffix != ".csv":
        first = text.lstrip("\ufeff \t\r\n")[:1]
        if first and first != "{":
            raise UnreadableInput(
                f"{path}: does not start with a JSON object ('{{', found {first!r}), not JSON Lines"
            )


def _looks_like(head: bytes) -> str:
    for magic, what in _MAGIC:
        if head.startswith(magic) and magic != b"PAR1":
            return f"; it looks like {what}"
    return ""


# ---------------------------------------------------------------------------------------------
# reading files as text


def _read_csv_text(path: Path) -> pl.DataFrame:
    if path.stat().st_size == 0:
        raise UnreadableInput(f"{path}: empty file (a CSV file needs a header line)")
    try:
        header = pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except Exception as exc:
        raise UnreadableInput(f"{path}: not a readable CSV file ({_first_line(exc)})") from exc
    header = [h.strip() for h in header]
    missing = [f for f in REQUIRED_FIELDS if f not in header]
    if missing:
        raise UnreadableInput(
            f"{path}: CSV header lacks required column(s) {', '.join(missing)} "
            f"(header: {', '.join(header) or '(empty)'})"
        )
    n_extra = 4  # rows with more fields than the header are rejected, not truncated silently
    names = [f"_col{i}" for i in range(len(header) + n_extra)]
    try:
        df = pl.read_csv(
            path, has_header=False, skip_rows=1, schema={n: pl.String for n in names},
            truncate_ragged_lines=True, missing_columns="insert",
            row_index_name=LINE_NUMBER, row_index_offset=2,
        )
    except Exception as exc:
        raise UnreadableInput(f"{path}: not a readable CSV file ({_first_line(exc)})") from exc
    extra = names[len(header):]
    df = df.rename({names[i]: h for i, h in enumerate(header)})
    has_extra = pl.any_horizontal([pl.col(c).is_not_null() for c in extra])
    # a blank line reads as a row of nulls: skip it
    blank = ~pl.any_horizontal([pl.col(c).is_not_null() for c in [*header, *extra]])
    if df.select(blank.any()).item():
        df = df.filter(~blank)  # (a copy of the frame: only when there are blank lines)
    df = df.with_columns(
        pl.when(has_extra).then(pl.lit("row has more fields than the header")).otherwise(None)
        .alias("_parse_error"),
        pl.when(has_extra).then(pl.concat_str([pl.col(c) for c in extra], separator=",", ignore_nulls=True))
        .otherwise(None).alias("_extra"),
    )
    keep = [LINE_NUMBER, *[h for h in header if h in EVENT_FIELDS], "_parse_error", "_extra"]
    return df.select(keep).with_columns(pl.col(LINE_NUMBER).cast(pl.Int64))


def _read_jsonl_text(path: Path) -> pl.DataFrame:
    try:
        df = pl.read_lines(path, name=RAW, row_index_name=LINE_NUMBER, row_index_offset=1)
    except Exception as exc:  # polars: "invalid utf8" and I/O errors
        raise UnreadableInput(f"{path}: not readable UTF-8 text ({_first_line(exc)})") from exc
    bom = df.height > 0 and df[RAW][0].startswith("\ufeff")
    df = df.with_columns(pl.col(RAW).str.strip_prefix("\ufeff").str.strip_chars_end("\r"))
    df = df.filter(pl.col(RAW).str.strip_chars() != "")
    schema = {n: pl.String for n in EVENT_FIELDS}
    starts_object = pl.col(RAW).str.strip_chars_start().str.starts_with("{")
    fields = None
    if df.select(starts_object.all()).item():
        try:  # the usual case: every line is an object; decode them all at once as text fields
            fields = _read_ndjson_text(path if not bom else df[RAW], schema)
        except Exception:  # some line is malformed: find it below
            fields = None
    if fields is not None and fields.height == df.height:
        valid, invalid = df, df.clear()
    else:
        is_object = starts_object & pl.col(RAW).str.json_path_match("$").is_not_null()
        df = df.with_columns(is_object.alias("_is_object"))
        valid = df.filter(pl.col("_is_object")).drop("_is_object")
        invalid = df.filter(~pl.col("_is_object")).drop("_is_object")
        try:
            fields = _read_ndjson_text(valid[RAW], schema)
            if fields.height != valid.height:
                raise ValueError("row count mismatch")
        except Exception:  # fall back to one JSON path lookup per field
            fields = valid.select(pl.col(RAW).str.json_path_match(f"$.{n}").alias(n) for n in EVENT_FIELDS)
    valid = pl.concat([valid, fields], how="horizontal").with_columns(
        _exact_json_number(n, pl.col(n)).alias(n) for n in (QUANTITY, ATTEMPT)
    )
    invalid = invalid.with_columns(
        *[pl.lit(None, pl.String).alias(n) for n in EVENT_FIELDS],
        pl.lit("line is not a JSON object (malformed JSON)").alias("_parse_error"),
    )
    valid = valid.with_columns(pl.lit(None, pl.String).alias("_parse_error"))
    out = valid.merge_sorted(invalid.select(valid.columns), key=LINE_NUMBER) if invalid.height else valid
    return out.with_columns(pl.col(LINE_NUMBER).cast(pl.Int64))


def _read_ndjson_text(lines: pl.Series | Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every field as text (numbers, booleans, objects as their JSON text)."""
    if isinstance(lines, Path):
        return pl.read_ndjson(lines, schema=schema)
    if lines.len() == 0:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(lines.str.join("\n").item().encode(), schema=schema)


def _exact_json_number(name: str, value: pl.Expr) -> pl.Expr:
    """json_path_match renders numbers through float64; take the number's own text from the
    line when it denotes the same value, so 123456789012.123456 stays exact."""
    token = pl.col(RAW).str.extract(rf'"{name}"\s*:\s*(-?[0-9][0-9.]*)(?:\s*[,}}])', 1)
    same = token.cast(pl.Float64, strict=False) == value.cast(pl.Float64, strict=False)
    return pl.when(token.is_not_null() & same).then(token).otherwise(value)


def _frame_as_text(df: pl.DataFrame, source: str) -> pl.DataFrame:
    missing = [f for f in REQUIRED_FIELDS if f not in df.columns]
    if missing:
        raise UnreadableInput(f"{source}: lacks required column(s) {', '.join(missing)}")
    cols = []
    typed_ts = None
    for name in EVENT_FIELDS:
        if name not in df.columns:
            continue
        dtype = df.schema[name]
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                col = col.dt.strftime("%Y-%m-%dT%H:%M:%S%.f")  # naive: rejected for lacking an offset
            else:
                typed_ts = pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(TYPED_TS)
                col = col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")
        elif isinstance(dtype, pl.List | pl.Struct | pl.Array | pl.Object):
            raise UnreadableInput(f"{source}: column {name!r} has unsupported type {dtype}")
        cols.append(col.cast(pl.String).alias(name))
    if typed_ts is not None:
        cols.append(typed_ts)  # lets the fast path skip re-parsing the text it was formatted to
    return df.select(cols).with_row_index(LINE_NUMBER, offset=1).with_columns(
        pl.col(LINE_NUMBER).cast(pl.Int64)
    )


# ---------------------------------------------------------------------------------------------
# validation expressions (on the trimmed text columns ``_<field>``)

_SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
# ASCII digits only ([0-9], never \d): Unicode digits match \d but do not cast to numbers
_TS_WITH_OFFSET = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                   r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_TS_NAIVE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?$"
_DECIMAL = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"
_NEGATIVE_DECIMAL = r"^-([0-9]+(\.[0-9]*)?|\.[0-9]+)$"
_INTEGER = r"^\+?[0-9]+(\.0*)?$"


def _blank_to_null(e: pl.Expr) -> pl.Expr:
    return pl.when(e == "").then(None).otherwise(e)


def _shown(name: str) -> pl.Expr:
    """The value as shown in a reason: quoted, cut at 60 characters, control characters made
    visible (a reason is printed to terminals and stored; NUL cannot be stored in PostgreSQL)."""
    v = pl.col(f"_{name}")
    v = pl.when(v.str.len_chars() > 60).then(v.str.slice(0, 57) + "...").otherwise(v)
    v = (v.str.replace_all("\n", "\\n", literal=True).str.replace_all("\r", "\\r", literal=True)
         .str.replace_all("\x00", "\\0", literal=True).str.replace_all(_CONTROL, "\ufffd"))
    return pl.concat_str(pl.lit("'"), v, pl.lit("'"))


_FAST_TS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
_FAST_QUANTITY = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
_FAST_ATTEMPT = r"^[1-9][0-9]{0,8}$"


def _fast_columns(typed_ts: bool = False) -> list[pl.Expr]:
    ts = pl.col(OCCURRED_AT)
    q = pl.col(QUANTITY)
    a = pl.col(ATTEMPT)
    fast_ts = (
        pl.col(TYPED_TS) if typed_ts
        else pl.when(ts.str.contains(_FAST_TS))
        .then(ts.str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_unit="us"))
        .otherwise(None).dt.replace_time_zone("UTC")
    )
    return [
        fast_ts.alias("_fast_ts"),
        pl.when(q.is_null()).then(pl.lit(QUANTITY_SCALE, pl.Int64))
        .when(q.str.contains(_FAST_QUANTITY))
        .then((q.cast(pl.Decimal(18, 6), strict=False) * QUANTITY_SCALE).cast(pl.Int64, strict=False))
        .otherwise(None).alias("_fast_micros"),
        pl.when(a.is_null()).then(pl.lit(1, pl.Int32))
        .when(a.str.contains(_FAST_ATTEMPT)).then(a.cast(pl.Int32, strict=False))
        .otherwise(None).alias("_fast_attempt"),
    ]


def _fast_ok(with_parse_error: bool) -> pl.Expr:
    def plain_id(name):
        c = pl.col(name)
        return (c.str.len_chars().is_between(1, MAX_ID_CHARS) & ~c.str.contains(r"^\s|\s$")
                & ~c.str.contains(_CONTROL))

    return pl.all_horizontal(
        plain_id(EVENT_ID).fill_null(False),
        plain_id(API_KEY).fill_null(False),
        *[pl.col(n).str.contains(_SLUG).fill_null(False) for n in (ORG, PROJECT, WORKLOAD)],
        pl.col(ENVIRONMENT).is_in(list(ENVIRONMENTS)).fill_null(False),
        pl.col(METER).is_in(list(METER_NAMES)).fill_null(False),
        pl.col(CHANNEL).is_in(list(CHANNELS)).fill_null(False),
        (pl.col(STATUS).is_null() | pl.col(STATUS).is_in(list(STATUSES))).fill_null(False),
        pl.col("_fast_ts").is_between(MIN_OCCURRED_AT, MAX_OCCURRED_AT, closed="left").fill_null(False),
        pl.col("_fast_micros").is_not_null(),
        pl.col("_fast_attempt").is_not_null(),
        pl.col("_parse_error").is_null() if with_parse_error else pl.lit(True),
    )


def _parsed_columns() -> list[pl.Expr]:
    ts_text = pl.col(f"_{OCCURRED_AT}")
    ts_norm = (
        ts_text.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]", "${1}T")
        .str.replace(r"[Zz]$", "+00:00")
    )
    ts = ts_norm.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_zone="UTC", time_unit="us")
    q = pl.col(f"_{QUANTITY}").fill_null(DEFAULTS[QUANTITY])
    q_int = q.str.extract(r"^\+?([0-9]*)", 1).str.strip_chars_start("0")
    q_frac = q.str.extract(r"\.([0-9]*)$", 1).fill_null("").str.strip_chars_end("0")
    q_ok = q.str.contains(_DECIMAL)
    micros = (
        pl.when(q_ok & (q_int.str.len_chars() <= MAX_QUANTITY_INT_DIGITS) & (q_frac.str.len_chars() <= 6))
        .then(
            pl.when(q_int == "").then(pl.lit("0")).otherwise(q_int).cast(pl.Int64, strict=False)
            * QUANTITY_SCALE
            + pl.when(q_frac == "").then(pl.lit("0")).otherwise(q_frac.str.pad_end(6, "0"))
            .cast(pl.Int64, strict=False)
        )
        .otherwise(None)
    )
    a = pl.col(f"_{ATTEMPT}").fill_null(DEFAULTS[ATTEMPT])
    a_int = a.str.extract(r"^\+?([0-9]+)", 1).str.strip_chars_start("0")
    attempt = (
        pl.when(a.str.contains(_INTEGER) & (a_int.str.len_chars() <= MAX_ATTEMPT_DIGITS))
        .then(pl.when(a_int == "").then(pl.lit("0")).otherwise(a_int).cast(pl.Int64, strict=False))
        .otherwise(None)
    )
    return [
        ts.alias("_ts"),
        q_int.str.len_chars().alias("_q_int_len"),
        q_frac.str.len_chars().alias("_q_frac_len"),
        micros.alias("_micros"),
        a_int.str.len_chars().alias("_a_int_len"),
        attempt.alias("_attempt_int"),
    ]


def _not_one_of(name: str, allowed: Sequence[str]) -> pl.Expr:
    return pl.concat_str(pl.lit(f"{name}: "), _shown(name), pl.lit(f" is not one of {', '.join(allowed)}"))


def _rules() -> list[list[tuple[pl.Expr, pl.Expr]]]:
    """Per field, its rules in order as (broken condition, reason); a field's reason is the
    first broken rule's. A null condition counts as not broken."""

    def col(n: str) -> pl.Expr:
        return pl.col(f"_{n}")

    def says(name: str, text: str) -> pl.Expr:
        return pl.concat_str(pl.lit(f"{name}: "), _shown(name), pl.lit(text))

    def missing(name: str) -> tuple[pl.Expr, pl.Expr]:
        return col(name).is_null(), pl.lit(f"{name}: missing required field")

    rules: list[list[tuple[pl.Expr, pl.Expr]]] = []
    for name in (EVENT_ID, API_KEY):
        rules.append([
            missing(name),
            (col(name).str.len_chars() > MAX_ID_CHARS,
             pl.format(f"{name}: longer than {MAX_ID_CHARS} characters ({{}})", col(name).str.len_chars())),
            (col(name).str.contains(_CONTROL),
             says(name, " contains a control character (newline, NUL, ...)")),
        ])
    ts = col(OCCURRED_AT)
    rules.append([
        missing(OCCURRED_AT),
        (ts.str.contains(_TS_NAIVE), says(OCCURRED_AT, " has no UTC offset (add Z or +hh:mm)")),
        (~ts.str.contains(_TS_WITH_OFFSET),
         says(OCCURRED_AT, " is not an RFC 3339 timestamp with offset, e.g. 2026-03-01T12:00:00Z")),
        (pl.col("_ts").is_null(), says(OCCURRED_AT, " is not a valid date/time")),
        (~pl.col("_ts").is_between(MIN_OCCURRED_AT, MAX_OCCURRED_AT, closed="left"),
         says(OCCURRED_AT, f" is outside {MIN_OCCURRED_AT.year}-{MAX_OCCURRED_AT.year - 1} (UTC)")),
    ])
    for name in (ORG, PROJECT, WORKLOAD):
        rules.append([
            missing(name),
            (~col(name).str.contains(_SLUG),
             says(name, " is not a slug (lowercase letters, digits, '-', 1-63 chars)")),
        ])
    for name, allowed in ((ENVIRONMENT, ENVIRONMENTS), (METER, METER_NAMES), (CHANNEL, CHANNELS)):
        rules.append([missing(name), (~col(name).is_in(list(allowed)), _not_one_of(name, allowed))])
    # status, quantity and attempt are optional: missing means the default
    rules.append([(~col(STATUS).is_in(list(STATUSES)), _not_one_of(STATUS, STATUSES))])
    q = col(QUANTITY)
    rules.append([
        (q.str.contains(_NEGATIVE_DECIMAL), says(QUANTITY, " is negative; must be >= 0")),
        (~q.str.contains(_DECIMAL), says(QUANTITY, " is not a decimal number")),
        (pl.col("_q_frac_len") > 6, says(QUANTITY, " has more than 6 decimal places")),
        (pl.col("_q_int_len") > MAX_QUANTITY_INT_DIGITS,
         says(QUANTITY, f" is too large (must be below 10^{MAX_QUANTITY_INT_DIGITS})")),
        # backstop: whatever passed the checks above must also have been typed
        (pl.col("_micros").is_null(), says(QUANTITY, " is not a decimal number")),
    ])
    a = col(ATTEMPT)
    rules.append([
        (~a.str.contains(_INTEGER), says(ATTEMPT, " is not a whole number")),
        (pl.col("_a_int_len") > MAX_ATTEMPT_DIGITS, says(ATTEMPT, " is too large")),
        (pl.col("_attempt_int") < 1, says(ATTEMPT, " must be >= 1")),
        (pl.col("_attempt_int").is_null(), says(ATTEMPT, " is not a whole number")),
    ])
    return rules


def _broken(rules) -> pl.Expr:
    """True where any rule is broken (cheap: booleans only)."""
    return pl.any_horizontal([cond.fill_null(False) for field_rules in rules for cond, _ in field_rules])


def _reason(rules) -> pl.Expr:
    """The reasons of the broken rules, '; '-joined (only evaluated on rows known to be broken)."""
    per_field = []
    for field_rules in rules:
        (cond, msg), *rest = field_rules
        expr = pl.when(cond).then(msg)
        for cond, msg in rest:
            expr = expr.when(cond).then(msg)
        per_field.append(expr.otherwise(None))
    return pl.concat_str(per_field, separator="; ", ignore_nulls=True)


# ---------------------------------------------------------------------------------------------
# storing


def _store(
    engine, parsed: ParsedEvents, source: str, *, now: datetime | None, run_by: str | None,
    rows_read: int, progress: bool = False,
) -> IngestResult:
    from queries import store

    now = now or utcnow()
    good = parsed.good
    if not good[LINE_NUMBER].is_sorted():
        good = good.sort(LINE_NUMBER)
    first = pl.struct(ORG, EVENT_ID).is_first_distinct()  # first occurrence in the file wins
    in_file_dups = good.height - int(good.select(first.sum()).item())
    unique = good.filter(first) if in_file_dups else good
    bar = _progress_bar(source, unique.height) if progress else None
    try:
        counts = store.store_batch(
            engine, unique.drop(LINE_NUMBER), parsed.rejected, source=source, now=now,
            run_by=run_by or _who(), rows_read=rows_read, in_file_duplicates=in_file_dups,
            on_progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    first = parsed.rejected.sort(LINE_NUMBER).head(5).select(LINE_NUMBER, REASON)
    reasons = tuple(f"line {ln}: {r}" for ln, r in first.iter_rows())
    return IngestResult(
        accepted=counts.accepted, duplicates=counts.duplicates, rejected=parsed.rejected.height,
        run_id=counts.run_id, source=source, rows_read=rows_read, first_reasons=reasons,
    )


def _progress_bar(source: str, total: int):
    if total < PROGRESS_MIN_ROWS or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=Path(source).name, unit="ev", unit_scale=True, file=sys.stderr)


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# command line


def _cmd_ingest(args, engine, *, out: Callable[[str], None] = print) -> int:
    from metering.access_cli import principal_of, require_platform
    from queries.engine import upgrade

    require_platform(args)  # an event file may carry any org's events
    principal = principal_of(args)
    run_by = None if principal.is_local else principal.user_id  # None: the OS login
    try:
        max_bytes = args.max_bytes if getattr(args, "max_bytes", None) else default_max_bytes()
    except UnreadableInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    upgrade(engine)
    totals = [0, 0, 0]
    unreadable = 0
    for path in args.files:
        try:
            (result,) = ingest_files(engine, [path], progress=True, max_bytes=max_bytes, run_by=run_by)
        except UnreadableInput as exc:
            unreadable += 1
            print(f"error: {exc}; nothing written for this file", file=sys.stderr)
            continue
        totals[0] += result.accepted
        totals[1] += result.duplicates
        totals[2] += result.rejected
        out(f"{path}: {_counts(result.accepted, result.duplicates, result.rejected)} (run {result.run_id})")
        if result.rejected:
            out(f"  {result.rejected} rejected row(s) kept in quarantine (run {result.run_id}); "
                "first reasons:")
            for reason in result.first_reasons:
                out(f"    {reason}")
    if len(args.files) > 1:
        out(f"total: {_counts(*totals)}" + (f"; {unreadable} unreadable file(s)" if unreadable else ""))
    if unreadable:
        return EXIT_UNREADABLE
    return EXIT_SOME_REJECTED if totals[2] else EXIT_OK


def _counts(accepted: int, duplicates: int, rejected: int) -> str:
    return f"{accepted} accepted, {duplicates} duplicate, {rejected} rejected"


__all__: Sequence[str] = [
    "EVENT_FIELDS", "GOOD_SCHEMA", "IngestResult", "ParsedEvents", "REJECTED_SCHEMA", "UnreadableInput",
    "default_max_bytes", "events_from_frame", "ingest_files", "ingest_frame", "parse_events", "parse_size",
    "register", "validate_text",
]
