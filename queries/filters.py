"""Options for the shared sidebar filters, read from the data (scoped by org)."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from queries.engine import DatabaseUnavailable
from queries.schema import organizations, usage_daily
from queries.usage import UnscopedQuery


def known_orgs(engine: sa.Engine, orgs: Collection[str] | None) -> list[str]:
    """Orgs that exist in the store, restricted to ``orgs`` (None = every org: local admin mode)."""
    stmt = sa.select(organizations.c.org).order_by(organizations.c.org)
    if orgs is not None:
        stmt = stmt.where(organizations.c.org.in_(sorted(set(orgs))))
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(str(exc.orig or exc).strip().splitlines()[0]) from exc


def org_dimension_values(engine: sa.Engine, org: str, orgs: Collection[str]) -> dict[str, list]:
    """Distinct projects, environments, workloads, api keys and the day range of one org."""
    if org not in set(orgs):
        raise UnscopedQuery(f"org {org!r} is outside the caller's scope")
    t = usage_daily.c
    out: dict[str, list] = {}
    with engine.connect() as conn:
        for col in ("project", "environment", "workload", "api_key"):
            c = getattr(t, col)
            out[col] = [r[0] for r in conn.execute(sa.select(c).where(t.org == org).distinct().order_by(c))]
        lo, hi = conn.execute(sa.select(sa.func.min(t.day), sa.func.max(t.day)).where(t.org == org)).one()
    out["first_day"], out["last_day"] = lo, hi
    return out
