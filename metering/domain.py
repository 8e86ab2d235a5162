"""Names fixed by shared/DOMAIN.md: meters, environments, channels, frame columns.

One registry every module, page and export uses, so a meter or a column is defined once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PERIOD_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

ENVIRONMENTS = ("sandbox", "production")
CHANNELS = ("api", "operator", "delivery")
STATUSES = ("success", "failed")
QUANTITY_SCALE = 1_000_000  # quantities are stored as integer micro-units


@dataclass(frozen=True)
class Meter:
    name: str
    label: str
    unit: str
    summary_key: str | None  # key in the `summary --json` output, where DOMAIN.md names one
    color: str  # one colour per meter across every chart


METERS: dict[str, Meter] = {
    m.name: m
    for m in (
        Meter("lookup", "HRS lookups", "lookup", "lookups", "#4C78A8"),
        Meter("expanded_history", "Expanded history", "call", "expanded_history_calls", "#F58518"),
        Meter("report_job", "Report jobs", "job", "report_jobs", "#E45756"),
        Meter("export_records", "Export records", "record", "export_records", "#72B7B2"),
        Meter("webhook_delivery", "Webhook deliveries", "delivery", "webhook_deliveries", "#54A24B"),
        Meter("assisted_review", "Assisted reviews", "review", "assisted_reviews", "#B279A2"),
    )
}
METER_NAMES = tuple(METERS)
WEBHOOK_METER = "webhook_delivery"
LOOKUP_METER = "lookup"
HEAVY_METERS = ("report_job", "export_records")  # "packaging" work

# Columns of the usage frame (one row per rollup key; see queries/schema.py usage_daily).
DAY = "day"
ORG = "org"
PROJECT = "project"
ENVIRONMENT = "environment"
API_KEY = "api_key"
METER = "meter"
WORKLOAD = "workload"
CHANNEL = "channel"
STATUS = "status"
RETRY = "retry"
ELIGIBLE = "eligible"
QUANTITY_MICROS = "quantity_micros"
EVENTS = "events"
AMOUNT_CENTS = "amount_cents"  # allocated money per part, integer cents

USAGE_SCHEMA: dict[str, pl.DataType] = {
    DAY: pl.Date(),
    ORG: pl.String(),
    PROJECT: pl.String(),
    ENVIRONMENT: pl.String(),
    API_KEY: pl.String(),
    METER: pl.String(),
    WORKLOAD: pl.String(),
    CHANNEL: pl.String(),
    STATUS: pl.String(),
    RETRY: pl.Boolean(),
    ELIGIBLE: pl.Boolean(),
    QUANTITY_MICROS: pl.Int64(),
    EVENTS: pl.Int64(),
}

# Dimensions a breakdown, concentration or lane may group by (whitelist; never interpolated).
DIMENSIONS = (PROJECT, ENVIRONMENT, API_KEY, WORKLOAD, METER, CHANNEL, DAY)
DIMENSION_LABELS = {
    PROJECT: "Project",
    ENVIRONMENT: "Environment",
    API_KEY: "API key",
    WORKLOAD: "Workload",
    METER: "Meter",
    CHANNEL: "Channel",
    DAY: "Day",
}


def empty_usage() -> pl.DataFrame:
    return pl.DataFrame(schema=USAGE_SCHEMA)
