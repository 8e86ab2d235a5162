"""The metering store's tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

Exactness rules:
- quantities are stored as integer micro-units (``quantity_micros`` = quantity * 10**6), so
  SQLite (no decimal type) and PostgreSQL hold the same exact numbers;
- money is stored as integer cents (``*_cents``) or as decimal strings inside a rate card.

Every table that holds customer data carries ``org`` so every read can be scoped.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = sa.DateTime(timezone=True)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("org", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("created_at", TS, nullable=False),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("org", sa.String(63), primary_key=True),
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("created_at", TS, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("org", sa.String(63), primary_key=True),
    sa.Column("api_key", sa.String(128), primary_key=True),
    sa.Column("project", sa.String(63), nullable=False),
    # the environment the key was issued for; events may arrive from another one
    sa.Column("environment", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_used_at", TS, nullable=True),
    sa.Column("revoked_at", TS, nullable=True),
)

ingest_runs = sa.Table(
    "ingest_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS, nullable=True),
    # running | committed | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_read", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("accepted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duplicates", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rejected", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("run_by", sa.String(200), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
)

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("org", sa.String(63), primary_key=True),
    sa.Column("event_id", sa.String(128), primary_key=True),  # unique per org, forever
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("project", sa.String(63), nullable=False),
    sa.Column("environment", sa.String(16), nullable=False),
    sa.Column("api_key", sa.String(128), nullable=False),
    sa.Column("meter", sa.String(32), nullable=False),
    sa.Column("workload", sa.String(63), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("quantity_micros", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ingest_run_id", sa.Integer, nullable=False, index=True),
)

# One row per (day, org, project, environment, api_key, meter, workload, channel, status, retry).
# ``eligible`` = billable-eligible per DOMAIN.md (success, and attempt = 1 for webhooks); the
# webhook billing policy is an org term applied at pricing time, not here.
usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("org", sa.String(63), primary_key=True),
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("environment", sa.String(16), primary_key=True),
    sa.Column("api_key", sa.String(128), primary_key=True),
    sa.Column("meter", sa.String(32), primary_key=True),
    sa.Column("workload", sa.String(63), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("retry", sa.Boolean, primary_key=True),
    sa.Column("eligible", sa.Boolean, nullable=False),
    sa.Column("quantity_micros", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Index("ix_usage_daily_org_day", "org", "day"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ingest_run_id", sa.Integer, nullable=False, index=True),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("line_number", sa.BigInteger, nullable=False),
    sa.Column("org", sa.String(200), nullable=True),  # as read, may be invalid
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

# Late events: accepted events whose UTC period was already closed when they arrived.
restatements = sa.Table(
    "restatements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ingest_run_id", sa.Integer, nullable=False),
    sa.Column("org", sa.String(63), nullable=False, index=True),
    sa.Column("period", sa.String(7), nullable=False),  # YYYY-MM
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("quantity_micros", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", TS, nullable=False),
)

rate_cards = sa.Table(
    "rate_cards",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("effective_from", sa.String(7), nullable=False, index=True),  # YYYY-MM
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # the TOML text as loaded
    sa.Column("loaded_at", TS, nullable=False),
    sa.Column("loaded_by", sa.String(200), nullable=False),
)

budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("org", sa.String(63), nullable=False, index=True),
    sa.Column("scope", sa.String(16), nullable=False),  # org | project | api_key
    sa.Column("scope_value", sa.String(128), nullable=False),  # org slug, project or key id
    sa.Column("amount_cents", sa.BigInteger, nullable=False),  # per monthly period
    sa.Column("thresholds", sa.String(200), nullable=False),  # percents, e.g. "50,80,100"
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("org", "scope", "scope_value"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("org", sa.String(63), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # viewer | finance | admin
)

ROLLUP_KEY = (
    "day", "org", "project", "environment", "api_key", "meter", "workload", "channel",
    "status", "retry",
)
