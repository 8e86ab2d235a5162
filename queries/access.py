"""Memberships (user -> org, role): the only SQL for authorization data.

Reads of a user's own memberships are keyed by that user. Listing and changing memberships is
scoped like every other query: the caller passes the orgs it administers (``"*"`` in that
collection means it may also grant platform memberships).
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl
import sqlalchemy as sa

from metering.access import PLATFORM, Role, check_org_name, check_user_id
from queries.schema import memberships
from queries.usage import UnscopedQuery

MEMBERSHIP_SCHEMA = {"user_id": pl.String, "org": pl.String, "role": pl.String}


def memberships_of(engine: sa.Engine, user_id: str) -> dict[str, str]:
    """org -> role name for one user (empty when the user has no membership)."""
    uid = check_user_id(user_id)
    m = memberships.c
    with engine.connect() as conn:
        return {org: role for org, role in conn.execute(
            sa.select(m.org, m.role).where(m.user_id == uid).order_by(m.org))}


def list_memberships(engine: sa.Engine, orgs: Collection[str]) -> pl.DataFrame:
    """Memberships in ``orgs`` (include ``"*"`` to list platform memberships too)."""
    scope = _scope(orgs)
    m = memberships.c
    stmt = sa.select(m.user_id, m.org, m.role).where(m.org.in_(scope)).order_by(m.org, m.user_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=MEMBERSHIP_SCHEMA, orient="row")


def membership_orgs(engine: sa.Engine) -> list[str]:
    """Every org (and ``"*"``) that has a membership: for the operator's unscoped listing."""
    m = memberships.c
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(m.org).distinct().order_by(m.org))]


def grant(engine: sa.Engine, orgs: Collection[str], user_id: str, org: str, role: str | Role) -> None:
    """Insert or change one membership; ``org`` must be in ``orgs`` (the orgs the caller administers)."""
    uid, org_name, role_name = check_user_id(user_id), check_org_name(org), Role.parse(role).label
    _check(orgs, org_name)
    m = memberships.c
    with engine.begin() as conn:
        changed = conn.execute(
            memberships.update().where(m.user_id == uid, m.org == org_name).values(role=role_name)
        ).rowcount
        if not changed:
            conn.execute(memberships.insert().values(user_id=uid, org=org_name, role=role_name))


def revoke(engine: sa.Engine, orgs: Collection[str], user_id: str, org: str) -> bool:
    """Delete one membership; True when it existed."""
    uid, org_name = check_user_id(user_id), check_org_name(org)
    _check(orgs, org_name)
    m = memberships.c
    with engine.begin() as conn:
        return conn.execute(memberships.delete().where(m.user_id == uid, m.org == org_name)).rowcount > 0


def _scope(orgs: Collection[str]) -> list[str]:
    if orgs is None or isinstance(orgs, str):
        raise UnscopedQuery("membership reads and writes need the collection of orgs the caller administers")
    return sorted(set(orgs))


def _check(orgs: Collection[str], org: str) -> None:
    if org not in set(_scope(orgs)):
        what = "platform memberships" if org == PLATFORM else f"org {org!r}"
        raise UnscopedQuery(f"{what} is outside the caller's admin scope")


__all__ = ["MEMBERSHIP_SCHEMA", "grant", "list_memberships", "membership_orgs", "memberships_of", "revoke"]
