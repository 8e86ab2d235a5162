"""Writes of demo-only metadata that usage events cannot carry.

Owns: org display names and creation dates, project creation dates, API keys as issued
(project, environment, created_at, revoked_at), keys issued but never used, and the
"is the store empty?" check behind ``demo --if-empty``. Ingestion owns everything derived
from events (usage rows, rollups, last_used_at); these writes never touch those columns.
SQLAlchemy Core upserts, bound parameters, one transaction per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from queries.schema import api_keys, organizations, projects, usage_events


@dataclass(frozen=True)
class IssuedKey:
    """An API key as issued: its project, the environment it was issued for, and when."""

    org: str
    api_key: str
    project: str
    environment: str
    created_at: datetime
    revoked_at: datetime | None = None


def usage_events_exist(engine: sa.Engine) -> bool:
    """True when usage_events holds at least one row (an existence check; returns no data)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.literal(1)).select_from(usage_events).limit(1)).first() is not None


def upsert_orgs(engine: sa.Engine, orgs: Mapping[str, tuple[str, datetime]]) -> int:
    """Set display name and created_at per org slug (``{org: (name, created_at)}``); inserts
    orgs not seen yet. Returns the number of orgs written."""
    rows = [{"org": o, "name": name, "created_at": _aware(created, f"orgs[{o!r}]")}
            for o, (name, created) in sorted(orgs.items())]
    return _upsert(engine, organizations, rows, ["org"], ["name", "created_at"])


def upsert_projects(engine: sa.Engine, created: Mapping[tuple[str, str], datetime]) -> int:
    """Set created_at per (org, project); inserts projects not seen yet."""
    rows = [{"org": o, "project": p, "created_at": _aware(c, f"projects[{(o, p)!r}]")}
            for (o, p), c in sorted(created.items())]
    return _upsert(engine, projects, rows, ["org", "project"], ["created_at"])


def upsert_api_keys(engine: sa.Engine, keys: Sequence[IssuedKey]) -> int:
    """Write keys as issued. A key already known (e.g. from ingestion) keeps its last_used_at;
    project, environment, created_at and revoked_at are set from ``keys``. A key with no
    events yet is inserted with last_used_at NULL (issued, never used)."""
    rows = []
    for k in keys:
        where = f"key {k.org}/{k.api_key}"
        if k.environment not in ("sandbox", "production"):
            raise ValueError(f"{where}: environment must be sandbox or production, got {k.environment!r}")
        created = _aware(k.created_at, f"{where} created_at")
        revoked = _aware(k.revoked_at, f"{where} revoked_at") if k.revoked_at is not None else None
        if revoked is not None and revoked < created:
            raise ValueError(f"{where}: revoked_at {revoked.isoformat()} is before created_at")
        rows.append({"org": k.org, "api_key": k.api_key, "project": k.project,
                     "environment": k.environment, "created_at": created, "revoked_at": revoked})
    return _upsert(engine, api_keys, rows, ["org", "api_key"],
                   ["project", "environment", "created_at", "revoked_at"])


def revoke_key(engine: sa.Engine, org: str, api_key: str, revoked_at: datetime) -> bool:
    """Mark one key revoked at ``revoked_at``. False when the key is unknown."""
    revoked_at = _aware(revoked_at, "revoked_at")
    t = api_keys.c
    with engine.begin() as conn:
        res = conn.execute(
            api_keys.update().where(t.org == org, t.api_key == api_key).values(revoked_at=revoked_at)
        )
    return res.rowcount > 0


def _upsert(engine: sa.Engine, table: sa.Table, rows: list[dict], key: list[str], update: list[str]) -> int:
    if not rows:
        return 0
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=key, set_={c: stmt.excluded[c] for c in update})
    with engine.begin() as conn:
        conn.execute(stmt, rows)
    return len(rows)


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)
