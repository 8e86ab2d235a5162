"""Storage of versioned rate cards, and the org lookups the invoice commands need.

Rate cards are platform-wide (the per-org terms live inside the card's TOML), so reading one
is not org-scoped; ``known_orgs`` is, like every read of customer data.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

import sqlalchemy as sa

from queries.schema import organizations, rate_cards, usage_daily


def insert_rate_card(
    engine: sa.Engine, *, effective_from: str, currency: str, source: str, loaded_by: str
) -> int:
    """Store one card version (the TOML text as loaded); returns its id."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.insert(rate_cards)
            .values(
                effective_from=effective_from,
                currency=currency,
                source=source,
                loaded_at=datetime.now(UTC),
                loaded_by=loaded_by,
            )
            .returning(rate_cards.c.id)
        )
        return int(result.scalar_one())


def rate_card_source_for_period(engine: sa.Engine, period: str) -> str | None:
    """TOML of the newest card with effective_from <= period (latest load wins a tie)."""
    t = rate_cards.c
    stmt = (
        sa.select(t.source)
        .where(t.effective_from <= period)
        .order_by(t.effective_from.desc(), t.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one_or_none()


def list_rate_cards(engine: sa.Engine) -> list[dict]:
    """Every stored version, newest effective_from first (id, effective_from, currency, loaded_*)."""
    t = rate_cards.c
    stmt = sa.select(t.id, t.effective_from, t.currency, t.loaded_at, t.loaded_by).order_by(
        t.effective_from.desc(), t.id.desc()
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def known_orgs(engine: sa.Engine, orgs: Collection[str]) -> set[str]:
    """The subset of ``orgs`` that exist: registered in organizations or with any usage."""
    if orgs is None or isinstance(orgs, str):
        raise ValueError("known_orgs needs a collection of org slugs")
    wanted = sorted(set(orgs))
    if not wanted:
        return set()
    with engine.connect() as conn:
        found = set(
            conn.execute(sa.select(organizations.c.org).where(organizations.c.org.in_(wanted))).scalars()
        )
        missing = [o for o in wanted if o not in found]
        if missing:
            found |= set(
                conn.execute(
                    sa.select(usage_daily.c.org).where(usage_daily.c.org.in_(missing)).distinct()
                ).scalars()
            )
    return found


__all__ = ["insert_rate_card", "known_orgs", "list_rate_cards", "rate_card_source_for_period"]
