"""Rate cards: parsing, validation, graduated tier pricing, versioned storage, `pricing load`.

A rate card is TOML (shared/DOMAIN.md "Rate card"). Money and quantities in it are read as
Decimal from strings or integers; a TOML float is rejected, since it has already lost
exactness. An invalid card is rejected whole with an ``InvalidRateCard`` naming the bad key
path (``meters.lookup.production.tiers[1].up_to``; tier indices count from 0).

Cards are versioned by ``effective_from`` (YYYY-MM): ``card_for_period`` returns the newest
loaded card whose effective_from is at or before the period (a later load of the same
effective_from replaces the earlier one).
"""

from __future__ import annotations

import getpass
import re
import sys
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path

import sqlalchemy as sa

from metering.domain import ENVIRONMENTS, METER_NAMES, PERIOD_RE, SLUG_RE
from metering.periods import parse_period

EXIT_OK = 0
EXIT_INVALID = 2
DECIMAL_PRECISION = 60  # digits for exact tier arithmetic (far beyond any realistic amount)

_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_TOP_KEYS = ("currency", "effective_from", "meters", "orgs")
_TERM_KEYS = ("discount_percent", "minimum_commit", "webhooks_billable")


class InvalidRateCard(ValueError):
    """The card is rejected whole; ``path`` is the offending key path."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


@dataclass(frozen=True)
class Tier:
    """A graduated tier: units above the previous tier's up_to and up to ``up_to`` (None = open)."""

    up_to: Decimal | None
    unit_price: Decimal


@dataclass(frozen=True)
class TierCharge:
    """How much of a quantity fell in one tier, and what it cost (exact, before discount)."""

    tier: int  # 1-based, as a person reads the card
    start: Decimal  # units above this ...
    up_to: Decimal | None  # ... and up to this (None: open tier)
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class OrgTerms:
    discount_percent: Decimal = Decimal(0)
    minimum_commit: Decimal = Decimal(0)
    webhooks_billable: bool = False


@dataclass(frozen=True, eq=False)
class RateCard:
    currency: str
    effective_from: str
    meters: dict[tuple[str, str], tuple[Tier, ...]]
    orgs: dict[str, OrgTerms] = field(default_factory=dict)
    source: str | None = None  # the TOML text, when parsed from one

    def terms(self, org: str) -> OrgTerms:
        """The org's terms (defaults: no discount, no minimum, webhooks not billable)."""
        return self.orgs.get(org, OrgTerms())

    def tiers(self, meter: str, environment: str) -> tuple[Tier, ...] | None:
        """The tiers for a pair, or None when the pair is unpriced."""
        return self.meters.get((meter, environment))

    def unpriced_pairs(self) -> list[tuple[str, str]]:
        """Every known (meter, environment) pair the card does not price."""
        return [(m, e) for m in METER_NAMES for e in ENVIRONMENTS if (m, e) not in self.meters]


def parse_rate_card(text: str) -> RateCard:
    """Parse and validate a TOML rate card; raise InvalidRateCard naming the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRateCard("", f"not valid TOML: {exc}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise InvalidRateCard(key, f"unknown key (allowed: {', '.join(_TOP_KEYS)})")
    currency = data.get("currency")
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
        raise InvalidRateCard("currency", f"must be a 3-letter currency code like \"USD\", got {currency!r}")
    eff = data.get("effective_from")
    if not isinstance(eff, str) or not PERIOD_RE.match(eff):
        raise InvalidRateCard("effective_from", f"must be a period \"YYYY-MM\", got {eff!r}")
    meters = _parse_meters(data.get("meters", {}))
    orgs = _parse_orgs(data.get("orgs", {}))
    return RateCard(currency=currency, effective_from=eff, meters=meters, orgs=orgs, source=text)


def price_tiers(quantity: Decimal, tiers) -> Decimal:
    """Graduated price of ``quantity`` (exact Decimal): each unit priced by the tier it falls in."""
    return sum((c.amount for c in tier_charges(quantity, tiers)), Decimal(0))


def tier_charges(quantity: Decimal, tiers) -> list[TierCharge]:
    """The tiers a quantity reaches, with the quantity and exact amount in each (empty for 0)."""
    quantity = Decimal(quantity)
    if quantity < 0:
        raise ValueError(f"quantity must be >= 0, got {quantity}")
    out: list[TierCharge] = []
    start = Decimal(0)
    with localcontext() as ctx:
        ctx.prec = DECIMAL_PRECISION
        for i, tier in enumerate(tiers):
            if quantity <= start:
                break
            top = quantity if tier.up_to is None else min(quantity, tier.up_to)
            q = top - start
            out.append(TierCharge(i + 1, start, tier.up_to, q, tier.unit_price, q * tier.unit_price))
            if tier.up_to is None:
                break
            start = tier.up_to
    return out


def load_rate_card(engine: sa.Engine, path: str | Path, loaded_by: str | None = None) -> RateCard:
    """Validate the card in ``path`` and store it (nothing is stored when it is invalid)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRateCard("", f"cannot read {path}: {exc}") from None
    card = parse_rate_card(text)
    store_rate_card(engine, card, loaded_by)
    return card


def store_rate_card(engine: sa.Engine, card: RateCard, loaded_by: str | None = None) -> int:
    """Store a parsed card (its TOML source) as a new version; returns its id."""
    from queries.ratecards import insert_rate_card

    if card.source is None:
        raise ValueError("only a card parsed from TOML (with its source) can be stored")
    return insert_rate_card(
        engine,
        effective_from=card.effective_from,
        currency=card.currency,
        source=card.source,
        loaded_by=loaded_by or _current_user(),
    )


def card_for_period(engine: sa.Engine, period: str) -> RateCard | None:
    """The newest loaded card whose effective_from <= period, or None when there is none."""
    from queries.ratecards import rate_card_source_for_period

    parse_period(period)
    source = rate_card_source_for_period(engine, period)
    return None if source is None else parse_rate_card(source)


def register(sub) -> None:
    """`pricing load FILE.toml`: exit 0 stored, 2 invalid (nothing stored)."""
    p = sub.add_parser("pricing", help="rate cards: validate and store")
    psub = p.add_subparsers(dest="pricing_command", required=True, metavar="ACTION")
    load = psub.add_parser("load", help="validate and store a rate card (TOML)")
    load.add_argument("file", help="rate card TOML file")
    load.set_defaults(func=_cmd_load)


def _cmd_load(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_platform
    from queries.engine import upgrade

    require_platform(args)  # rate cards are platform-wide
    try:
        text = Path(args.file).read_text(encoding="utf-8")
        card = parse_rate_card(text)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except InvalidRateCard as exc:
        print(f"error: invalid rate card {args.file}: {exc}; nothing stored", file=sys.stderr)
        return EXIT_INVALID
    upgrade(engine)
    store_rate_card(engine, card)
    pairs = len(card.meters)
    print(f"stored rate card effective from {card.effective_from} ({card.currency}): "
          f"{pairs} priced meter/environment pairs, {len(card.orgs)} org terms")
    unpriced = card.unpriced_pairs()
    if unpriced:
        names = ", ".join(f"{m}/{e}" for m, e in unpriced)
        print(f"unpriced (billed at zero, flagged): {names}")
    return EXIT_OK


# --- validation helpers -------------------------------------------------------------------


def _decimal(value, path: str, *, what: str = "a decimal string like \"0.30\"") -> Decimal:
    if isinstance(value, bool):
        raise InvalidRateCard(path, f"must be {what}, got a boolean")
    if isinstance(value, float):
        raise InvalidRateCard(
            path, f"must be {what} or an integer, not a TOML float ({value!r}): a float has "
                  f"already lost exactness; quote it")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL_RE.match(value.strip()):
        return Decimal(value.strip())
    raise InvalidRateCard(path, f"must be {what}, got {value!r}")


def _parse_meters(meters) -> dict[tuple[str, str], tuple[Tier, ...]]:
    if not isinstance(meters, dict):
        raise InvalidRateCard("meters", "must be a table of [meters.METER.ENVIRONMENT]")
    out: dict[tuple[str, str], tuple[Tier, ...]] = {}
    for meter, envs in meters.items():
        mpath = f"meters.{meter}"
        if meter not in METER_NAMES:
            raise InvalidRateCard(mpath, f"unknown meter (known: {', '.join(METER_NAMES)})")
        if not isinstance(envs, dict):
            raise InvalidRateCard(mpath, "must be a table of environments")
        for env, body in envs.items():
            epath = f"{mpath}.{env}"
            if env not in ENVIRONMENTS:
                raise InvalidRateCard(epath, f"unknown environment (known: {', '.join(ENVIRONMENTS)})")
            if not isinstance(body, dict):
                raise InvalidRateCard(epath, "must be a table with `tiers`")
            for key in body:
                if key != "tiers":
                    raise InvalidRateCard(f"{epath}.{key}", "unknown key (allowed: tiers)")
            out[(meter, env)] = _parse_tiers(body.get("tiers"), f"{epath}.tiers")
    return out


def _parse_tiers(tiers, path: str) -> tuple[Tier, ...]:
    if not isinstance(tiers, list) or not tiers:
        raise InvalidRateCard(path, "must be a non-empty array of tiers")
    out: list[Tier] = []
    prev = Decimal(0)
    last = len(tiers) - 1
    for i, tier in enumerate(tiers):
        tpath = f"{path}[{i}]"
        if not isinstance(tier, dict):
            raise InvalidRateCard(tpath, "must be a table { up_to = ..., unit_price = \"...\" }")
        for key in tier:
            if key not in ("up_to", "unit_price"):
                raise InvalidRateCard(f"{tpath}.{key}", "unknown key (allowed: up_to, unit_price)")
        if "unit_price" not in tier:
            raise InvalidRateCard(f"{tpath}.unit_price", "missing")
        price = _decimal(tier["unit_price"], f"{tpath}.unit_price")
        if price < 0:
            raise InvalidRateCard(f"{tpath}.unit_price", f"must be >= 0, got {tier['unit_price']!r}")
        if i == last:
            if "up_to" in tier:
                raise InvalidRateCard(f"{tpath}.up_to", "the last tier must be open (no up_to)")
            out.append(Tier(None, price))
            continue
        if "up_to" not in tier:
            raise InvalidRateCard(f"{tpath}.up_to", "missing: only the last tier may be open")
        up_to = _decimal(tier["up_to"], f"{tpath}.up_to", what="a quantity (integer or decimal string)")
        if up_to <= prev:
            what = "the previous tier's up_to" if i else "0"
            raise InvalidRateCard(f"{tpath}.up_to", f"must be greater than {what} ({prev}), got {up_to}")
        out.append(Tier(up_to, price))
        prev = up_to
    return tuple(out)


def _parse_orgs(orgs) -> dict[str, OrgTerms]:
    if not isinstance(orgs, dict):
        raise InvalidRateCard("orgs", "must be a table of [orgs.ORG]")
    out: dict[str, OrgTerms] = {}
    for org, body in orgs.items():
        opath = f"orgs.{org}"
        if not SLUG_RE.match(org):
            raise InvalidRateCard(opath, "org must be a slug [a-z0-9][a-z0-9-]{0,62}")
        if not isinstance(body, dict):
            raise InvalidRateCard(opath, "must be a table of terms")
        for key in body:
            if key not in _TERM_KEYS:
                raise InvalidRateCard(f"{opath}.{key}", f"unknown key (allowed: {', '.join(_TERM_KEYS)})")
        discount = Decimal(0)
        if "discount_percent" in body:
            p = f"{opath}.discount_percent"
            discount = _decimal(body["discount_percent"], p, what="a percent string like \"10\"")
            if not Decimal(0) <= discount <= Decimal(100):
                raise InvalidRateCard(p, f"must be between 0 and 100, got {body['discount_percent']!r}")
        minimum = Decimal(0)
        if "minimum_commit" in body:
            p = f"{opath}.minimum_commit"
            minimum = _decimal(body["minimum_commit"], p, what="an amount string like \"2500.00\"")
            if minimum < 0:
                raise InvalidRateCard(p, f"must be >= 0, got {body['minimum_commit']!r}")
            if minimum != minimum.quantize(Decimal("0.01")):
                raise InvalidRateCard(p, f"must be whole cents (at most 2 decimals), got {minimum}")
        webhooks = body.get("webhooks_billable", False)
        if not isinstance(webhooks, bool):
            raise InvalidRateCard(f"{opath}.webhooks_billable", f"must be true or false, got {webhooks!r}")
        out[org] = OrgTerms(discount, minimum, webhooks)
    return out


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database in some containers
        return "unknown"


__all__ = [
    "InvalidRateCard", "OrgTerms", "RateCard", "Tier", "TierCharge", "card_for_period",
    "load_rate_card", "parse_rate_card", "price_tiers", "register", "store_rate_card", "tier_charges",
]
