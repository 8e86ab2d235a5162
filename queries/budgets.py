"""Budgets table reads and writes (SQLAlchemy Core, bound parameters), scoped by org.

Every function takes ``orgs``, the set of orgs the caller may see: a row of another org is
neither read nor written. Validation of values lives in metering.budgets; this module only
stores rows and answers "does this scope value exist for the org".
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa

from queries.schema import api_keys, budgets, organizations, projects, usage_daily
from queries.usage import UnscopedQuery

BUDGET_COLUMNS = (
    "id", "org", "scope", "scope_value", "amount_cents", "thresholds", "name", "created_at", "updated_at",
)


def select_budgets(engine: sa.Engine, orgs: Collection[str], org: str | None = None) -> list[dict]:
    """Budget rows of the visible orgs (or of one of them), ordered by org, scope, value."""
    scope = _scope(orgs)
    t = budgets.c
    stmt = sa.select(*[getattr(t, c) for c in BUDGET_COLUMNS]).where(t.org.in_(scope))
    if org is not None:
        stmt = stmt.where(t.org == org)
    stmt = stmt.order_by(t.org, t.scope, t.scope_value, t.id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def select_budget(engine: sa.Engine, orgs: Collection[str], budget_id: int) -> dict | None:
    t = budgets.c
    stmt = sa.select(*[getattr(t, c) for c in BUDGET_COLUMNS]).where(
        t.id == int(budget_id), t.org.in_(_scope(orgs))
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return dict(row._mapping) if row else None


def find_budget(engine: sa.Engine, orgs: Collection[str], org: str, scope: str,
                scope_value: str) -> dict | None:
    """The budget of one (org, scope, scope_value), the table's unique key."""
    t = budgets.c
    stmt = sa.select(*[getattr(t, c) for c in BUDGET_COLUMNS]).where(
        t.org.in_(_scope(orgs)), t.org == org, t.scope == scope, t.scope_value == scope_value
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return dict(row._mapping) if row else None


def insert_budget(engine: sa.Engine, orgs: Collection[str], *, org: str, scope: str, scope_value: str,
                  amount_cents: int, thresholds: str, name: str | None, now: datetime) -> int:
    """Insert one row; returns its id. Raises UnscopedQuery for an org outside ``orgs``."""
    _check_org(orgs, org)
    with engine.begin() as conn:
        res = conn.execute(
            budgets.insert().values(
                org=org, scope=scope, scope_value=scope_value, amount_cents=int(amount_cents),
                thresholds=thresholds, name=name, created_at=now, updated_at=now,
            ).returning(budgets.c.id)
        )
        return int(res.scalar_one())


def update_budget_row(engine: sa.Engine, orgs: Collection[str], budget_id: int, values: dict,
                      now: datetime) -> bool:
    """Update amount_cents / thresholds / name of one visible budget; False if none matched."""
    allowed = {k: v for k, v in values.items() if k in ("amount_cents", "thresholds", "name")}
    t = budgets.c
    with engine.begin() as conn:
        res = conn.execute(
            budgets.update()
            .where(t.id == int(budget_id), t.org.in_(_scope(orgs)))
            .values(**allowed, updated_at=now)
        )
        return res.rowcount == 1


def delete_budget_row(engine: sa.Engine, orgs: Collection[str], budget_id: int) -> bool:
    t = budgets.c
    with engine.begin() as conn:
        res = conn.execute(budgets.delete().where(t.id == int(budget_id), t.org.in_(_scope(orgs))))
        return res.rowcount == 1


def scope_value_exists(engine: sa.Engine, orgs: Collection[str], org: str, scope: str, value: str) -> bool:
    """Whether ``value`` names an existing org / project / api key of ``org``.

    Looks in the registry table (organizations, projects, api_keys) and, for data loaded without
    registry rows, in the usage rollup.
    """
    _check_org(orgs, org)
    u = usage_daily.c
    if scope == "org":
        if value != org:
            return False
        reg = sa.select(organizations.c.org).where(organizations.c.org == org)
        used = sa.select(u.org).where(u.org == org)
    elif scope == "project":
        reg = sa.select(projects.c.project).where(projects.c.org == org, projects.c.project == value)
        used = sa.select(u.project).where(u.org == org, u.project == value)
    elif scope == "api_key":
        reg = sa.select(api_keys.c.api_key).where(api_keys.c.org == org, api_keys.c.api_key == value)
        used = sa.select(u.api_key).where(u.org == org, u.api_key == value)
    else:
        raise ValueError(f"unknown budget scope {scope!r}")
    with engine.connect() as conn:
        return (conn.execute(reg.limit(1)).first() is not None
                or conn.execute(used.limit(1)).first() is not None)


def budget_orgs(engine: sa.Engine, orgs: Collection[str] | None) -> list[str]:
    """Orgs that have at least one budget, restricted to ``orgs`` (None = every org: local admin/CLI)."""
    stmt = sa.select(budgets.c.org).distinct().order_by(budgets.c.org)
    if orgs is not None:
        stmt = stmt.where(budgets.c.org.in_(_scope(orgs)))
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(stmt)]


def _scope(orgs: Collection[str]) -> list[str]:
    if orgs is None or isinstance(orgs, str):
        raise UnscopedQuery("every budget read or write needs the collection of orgs the caller may see")
    return sorted(set(orgs))


def _check_org(orgs: Collection[str], org: str) -> None:
    if org not in set(_scope(orgs)):
        raise UnscopedQuery(f"org {org!r} is outside the caller's scope")


__all__ = [
    "budget_orgs", "delete_budget_row", "find_budget", "insert_budget", "scope_value_exists",
    "select_budget", "select_budgets", "update_budget_row",
]
