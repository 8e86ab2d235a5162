"""The invoice, to the cent (shared/DOMAIN.md), its document, and the `summary`/`invoice` commands.

1. Quantity per (meter, environment) = sum of billable-eligible quantity (``eligible`` in the
   usage frame: success, and attempt = 1 for webhooks). Webhook deliveries are always counted;
   unless the org's terms say ``webhooks_billable`` their line is priced at zero, "not billed
   by policy". A pair the card does not price is priced at zero and flagged ``unpriced``.
2. Line amount = graduated tiers (exact Decimal), then the org discount, then cents half up.
3. Below ``minimum_commit``, a ``minimum_commit_true_up`` line brings the sum up to it.
4. Total = sum of line amounts.

Invoice preview (``as_of``): the rollup has day granularity, so the usage counted is every day
of the period from its first day up to and including as_of's UTC date; that last day is
counted whole (all of its usage, including events after the as_of moment).

``invoice_document`` is what both the CLI and the app call; its ``projection`` key is None here
(the forecast fills it through ``price_quantities``).
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

import polars as pl
import sqlalchemy as sa

from metering.domain import (
    DAY,
    ELIGIBLE,
    ENVIRONMENT,
    ENVIRONMENTS,
    METER,
    METER_NAMES,
    METERS,
    ORG,
    PROJECT,
    QUANTITY_MICROS,
    QUANTITY_SCALE,
    WEBHOOK_METER,
)
from metering.money import cents_to_decimal, to_cents
from metering.periods import BadPeriod, period_bounds
from metering.pricing import DECIMAL_PRECISION, OrgTerms, RateCard, TierCharge, tier_charges

TRUE_UP = "minimum_commit_true_up"
MINIMUM_COMMIT_PART = "(minimum commitment)"
NOT_BILLED_BY_POLICY = "not billed by policy"
UNPRICED = "unpriced: the rate card has no price for this meter and environment"
BREAKDOWN_DIMENSIONS = ("project", "environment", "api_key", "workload", "day")

EXIT_OK = 0
EXIT_USAGE = 2


class UnknownOrg(LookupError):
    """The org does not exist, or the caller may not see it."""


class BadAsOf(ValueError):
    """--as-of is not a timestamp with offset, or lies before the period."""


@dataclass(frozen=True)
class InvoiceLine:
    meter: str  # or TRUE_UP
    environment: str | None  # None for the true-up
    quantity: Decimal
    quantity_micros: int
    amount_cents: int
    unpriced: bool = False
    billed: bool = True  # False: not billed by policy (webhook deliveries)
    tiers: tuple[TierCharge, ...] = ()
    gross: Decimal = Decimal(0)  # exact graduated amount before discount
    discount_percent: Decimal = Decimal(0)
    note: str | None = None

    @property
    def line_id(self) -> str:
        return self.meter if self.environment is None else f"{self.meter}/{self.environment}"

    @property
    def gross_cents(self) -> int:
        return to_cents(self.gross) if self.meter != TRUE_UP else self.amount_cents

    @property
    def discount_cents(self) -> int:
        return self.gross_cents - self.amount_cents

    @property
    def effective_unit_rate(self) -> Decimal | None:
        from metering.allocate import effective_unit_rate

        return effective_unit_rate(self.amount_cents, self.quantity_micros)


@dataclass(frozen=True)
class Invoice:
    org: str
    period: str | None  # None when priced from bare quantities (a forecast)
    currency: str
    lines: tuple[InvoiceLine, ...]
    terms: OrgTerms = field(default_factory=OrgTerms)
    rate_card_effective_from: str | None = None
    usage_through: date | None = None  # last day of usage counted
    as_of: datetime | None = None

    @property
    def total_cents(self) -> int:
        return sum(ln.amount_cents for ln in self.lines)

    @property
    def subtotal_cents(self) -> int:
        """Sum of the usage lines, before the minimum-commit true-up."""
        return sum(ln.amount_cents for ln in self.lines if ln.meter != TRUE_UP)

    @property
    def true_up_cents(self) -> int:
        return sum(ln.amount_cents for ln in self.lines if ln.meter == TRUE_UP)

    def line(self, meter: str, environment: str | None = None) -> InvoiceLine | None:
        for ln in self.lines:
            if ln.meter == meter and ln.environment == environment:
                return ln
        return None


def billable_quantities(
    usage: pl.DataFrame, card: RateCard | None, org: str, period: str, through: date | None = None
) -> pl.DataFrame:
    """[meter, environment, quantity_micros]: billable-eligible quantity per pair (> 0 only).

    Webhook deliveries are included whatever the policy (they are counted always; the policy
    decides their price in ``price_quantities``). ``card`` does not change quantities.
    """
    return (
        eligible_usage(usage, org, period, through)
        .group_by([METER, ENVIRONMENT])
        .agg(pl.col(QUANTITY_MICROS).sum())
        .filter(pl.col(QUANTITY_MICROS) > 0)
        .sort([METER, ENVIRONMENT])
    )


def price_quantities(quantities: dict, card: RateCard | None, org: str) -> Invoice:
    """Price {(meter, environment): Decimal quantity} for the org: the forecast's seam.

    No card: every line is unpriced. Lines come in meter-registry then environment order.
    """
    terms = card.terms(org) if card is not None else OrgTerms()
    lines: list[InvoiceLine] = []
    for (meter, env), qty in sorted(quantities.items(), key=lambda kv: _pair_order(kv[0])):
        qty = _as_decimal_quantity(qty, f"{meter}/{env}")
        if qty == 0:
            continue
        lines.append(_price_line(meter, env, qty, card, terms))
    subtotal = sum(ln.amount_cents for ln in lines)
    minimum = to_cents(terms.minimum_commit)
    if subtotal < minimum:
        lines.append(InvoiceLine(TRUE_UP, None, Decimal(0), 0, minimum - subtotal,
                                 note=f"brings the total up to the minimum commitment "
                                      f"{cents_to_decimal(minimum)}"))
    return Invoice(
        org=org,
        period=None,
        currency=card.currency if card is not None else "USD",
        lines=tuple(lines),
        terms=terms,
        rate_card_effective_from=card.effective_from if card is not None else None,
    )


def build_invoice(
    usage: pl.DataFrame, card: RateCard | None, org: str, period: str, as_of: datetime | None = None
) -> Invoice:
    """The org's invoice for the period from the usage frame (month to date when as_of is set)."""
    through = usage_through(period, as_of)
    q = billable_quantities(usage, card, org, period, through)
    quantities = {
        (r[METER], r[ENVIRONMENT]): Decimal(r[QUANTITY_MICROS]) / QUANTITY_SCALE
        for r in q.iter_rows(named=True)
    }
    inv = price_quantities(quantities, card, org)  # micros / 10**6 is exact, so micros round-trip
    return replace(inv, period=period, usage_through=through, as_of=as_of)


def eligible_usage(
    usage: pl.DataFrame, org: str, period: str | None, through: date | None = None
) -> pl.DataFrame:
    """The billable-eligible rows of ``org`` in the period (days up to ``through`` inclusive)."""
    return period_usage(usage, org, period, through).filter(pl.col(ELIGIBLE))


def period_usage(
    usage: pl.DataFrame, org: str, period: str | None, through: date | None = None
) -> pl.DataFrame:
    """All traffic rows (eligible or not) of ``org`` in the period, up to ``through``."""
    if period is None:
        raise ValueError("the invoice has no period (it was priced from bare quantities)")
    start, end = period_bounds(period)
    if through is not None:
        end = min(end, through)
    return usage.filter(pl.col(ORG) == org, pl.col(DAY) >= start, pl.col(DAY) <= end)


def usage_through(period: str, as_of: datetime | None) -> date:
    """The last day of usage counted: the period's end, or as_of's UTC date if earlier."""
    start, end = period_bounds(period)
    if as_of is None:
        return end
    if as_of.tzinfo is None:
        raise BadAsOf(f"as-of {as_of.isoformat()} has no UTC offset")
    d = as_of.astimezone(UTC).date()
    if d < start:
        raise BadAsOf(f"as-of {as_of.isoformat()} is before period {period} starts ({start})")
    return min(d, end)


def parse_as_of(text: str) -> datetime:
    """RFC 3339 timestamp with offset (``Z`` or ``+hh:mm``), or a date (its UTC midnight)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise BadAsOf(f"bad --as-of {text!r}: expected an RFC 3339 timestamp such as "
                      f"2026-03-15T12:00:00Z") from None
    if ts.tzinfo is None:
        raise BadAsOf(f"bad --as-of {text!r}: the timestamp needs an offset (Z or +hh:mm)")
    return ts


def invoice_document(
    engine: sa.Engine, org: str, period: str, as_of: datetime | None = None, orgs=None
) -> dict:
    """The invoice as a JSON-ready dict (Decimals for money/quantities; metering.jsonout.dumps).

    Keys: org, period, period_status, currency, as_of, usage_through, rate_card, terms, lines
    (with tiers applied and effective unit rate), subtotal, discount, true_up, total,
    breakdowns (project, environment, api_key, workload, day), funnel, warnings, projection.
    Raises BadPeriod, UnknownOrg, BadAsOf.
    """
    card, usage, inv = _prepare(engine, org, period, as_of, orgs)
    projection = _projection(engine, org, period, inv, card, as_of)
    return document_from(org, period, as_of, card, usage, inv, projection)


def document_from(org: str, period: str, as_of: datetime | None, card, usage: pl.DataFrame,
                  inv: Invoice, projection: dict | None) -> dict:
    """The invoice document from what a caller already holds (the app's overview: its card, the
    period's usage of the org through the as-of day, the invoice and ``projection_json``)."""
    from metering.allocate import allocate_invoice
    from metering.funnel import billable_funnel

    breakdowns = {
        dim: _breakdown_parts(allocate_invoice(usage, inv, card, [dim]), dim)
        for dim in BREAKDOWN_DIMENSIONS
    }
    funnel = billable_funnel(usage, inv)
    warnings = []
    if card is None:
        warnings.append(f"no rate card is effective for {period}: every line is unpriced")
    for ln in inv.lines:
        if ln.unpriced:
            warnings.append(f"{ln.line_id} is unpriced (billed at zero): add it to the rate card")
    _, end = period_bounds(period)
    return {
        "org": org,
        "period": period,
        "period_status": "closed" if end < datetime.now(UTC).date() else "open",
        "currency": inv.currency,
        "as_of": as_of.isoformat() if as_of else None,
        "usage_through": inv.usage_through.isoformat(),
        "rate_card": None if card is None else {"effective_from": card.effective_from,
                                                "currency": card.currency},
        "terms": {
            "discount_percent": inv.terms.discount_percent,
            "minimum_commit": inv.terms.minimum_commit.quantize(Decimal("0.01")),
            "webhooks_billable": inv.terms.webhooks_billable,
        },
        "lines": [_line_dict(ln) for ln in inv.lines],
        "subtotal": cents_to_decimal(inv.subtotal_cents),
        "discount": cents_to_decimal(sum(ln.discount_cents for ln in inv.lines)),
        "true_up": cents_to_decimal(inv.true_up_cents),
        "total": cents_to_decimal(inv.total_cents),
        "breakdowns": breakdowns,
        "funnel": [_funnel_dict(r) for r in funnel.iter_rows(named=True)],
        "warnings": warnings,
        "projection": projection,
    }


def _projection(engine, org: str, period: str, inv: Invoice, card, as_of: datetime | None):
    """The forecast to period end (metering.forecast) for an open period or an --as-of preview."""
    from metering.forecast import history_start, project_invoice, projection_json
    from queries.usage import load_usage

    start, end = period_bounds(period)
    today = datetime.now(UTC).date()
    if as_of is None and not (start <= today <= end):
        return None  # a closed period's invoice is final
    through = inv.usage_through if as_of is not None else min(today, end)
    if through >= end and as_of is not None and through < today:
        return None  # as-of on or after the last day of a closed period: nothing left to project
    history = load_usage(engine, [org], history_start(period), through)
    return projection_json(project_invoice(history, card, org, period, through))


def summary_document(engine: sa.Engine, org: str, period: str, orgs=None) -> dict:
    """The DOMAIN.md usage summary: billable-eligible counts per meter and cost per project."""
    from metering.allocate import allocate_invoice, breakdown

    card, usage, inv = _prepare(engine, org, period, None, orgs)
    per_meter = {m: 0 for m in METER_NAMES}
    for r in (
        eligible_usage(usage, org, period).group_by(METER).agg(pl.col(QUANTITY_MICROS).sum()).iter_rows()
    ):
        per_meter[r[0]] = r[1]
    projects = breakdown(allocate_invoice(usage, inv, card, [PROJECT]), PROJECT)
    doc = {"period": period}
    ordered = ["lookup", "expanded_history", "report_job", WEBHOOK_METER]
    ordered += [m for m in METER_NAMES if m not in ordered]
    for m in ordered:
        doc[METERS[m].summary_key] = _quantity(per_meter[m])
    doc["project_breakdown"] = [
        {"project": r[PROJECT], "cost_usd": cents_to_decimal(r["amount_cents"])}
        for r in projects.iter_rows(named=True)
    ]
    # DOMAIN.md order puts the four named counts and project_breakdown first; extras follow
    head = ["period", "lookups", "expanded_history_calls", "report_jobs", "webhook_deliveries",
            "project_breakdown"]
    out = {k: doc[k] for k in head}
    out.update({k: v for k, v in doc.items() if k not in out})
    out["total_usd"] = cents_to_decimal(inv.total_cents)
    out["currency"] = inv.currency
    return out


def register(sub) -> None:
    """`summary` and `invoice` commands."""
    p = sub.add_parser("summary", help="usage summary for an org and period")
    p.add_argument("--org", required=True)
    p.add_argument("--period", required=True, help="YYYY-MM (UTC calendar month)")
    p.add_argument("--json", action="store_true", help="print the DOMAIN.md JSON shape")
    p.set_defaults(func=_cmd_summary)
    p = sub.add_parser("invoice", help="invoice lines, tiers, true-up, total and breakdowns")
    p.add_argument("--org", required=True)
    p.add_argument("--period", required=True, help="YYYY-MM (UTC calendar month)")
    p.add_argument("--as-of", default=None, help="RFC 3339 timestamp: month-to-date preview")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the full invoice document as JSON")
    fmt.add_argument("--csv", action="store_true", help="line items as CSV")
    p.set_defaults(func=_cmd_invoice)


# --- internals ----------------------------------------------------------------------------


def _prepare(engine, org, period, as_of, orgs):
    from metering.pricing import card_for_period
    from queries.ratecards import known_orgs
    from queries.usage import load_usage

    start, _ = period_bounds(period)  # BadPeriod first
    through = usage_through(period, as_of)
    scope = {org} if orgs is None else set(orgs)
    if org not in scope or not known_orgs(engine, [org]):
        raise UnknownOrg(f"unknown org {org!r}")
    card = card_for_period(engine, period)
    usage = load_usage(engine, [org], start, through)
    return card, usage, build_invoice(usage, card, org, period, as_of)


def _price_line(meter: str, env: str, qty: Decimal, card: RateCard | None, terms: OrgTerms) -> InvoiceLine:
    micros = _to_micros(qty)
    tiers = card.tiers(meter, env) if card is not None else None
    if tiers is None:
        return InvoiceLine(meter, env, qty, micros, 0, unpriced=True, note=UNPRICED)
    if meter == WEBHOOK_METER and not terms.webhooks_billable:
        return InvoiceLine(meter, env, qty, micros, 0, billed=False, note=NOT_BILLED_BY_POLICY)
    charges = tuple(tier_charges(qty, tiers))
    with localcontext() as ctx:
        ctx.prec = DECIMAL_PRECISION
        gross = sum((c.amount for c in charges), Decimal(0))
        net = gross * (Decimal(100) - terms.discount_percent) / Decimal(100)
        cents = to_cents(net)
    return InvoiceLine(meter, env, qty, micros, cents, tiers=charges, gross=gross,
                       discount_percent=terms.discount_percent)


def _pair_order(pair) -> tuple[int, int]:
    meter, env = pair
    if meter not in METER_NAMES:
        raise ValueError(f"unknown meter {meter!r}")
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r}")
    return METER_NAMES.index(meter), ENVIRONMENTS.index(env)


def _as_decimal_quantity(qty, where: str) -> Decimal:
    if isinstance(qty, float):
        raise ValueError(f"quantity for {where} is a float; pass a Decimal")
    q = Decimal(qty)
    if q < 0:
        raise ValueError(f"quantity for {where} must be >= 0, got {q}")
    return q


def _to_micros(qty: Decimal) -> int:
    with localcontext() as ctx:
        ctx.prec = DECIMAL_PRECISION
        return int((qty * QUANTITY_SCALE).to_integral_value())


def _quantity(micros: int) -> Decimal | int:
    q, r = divmod(int(micros), QUANTITY_SCALE)
    return q if r == 0 else (Decimal(int(micros)) / QUANTITY_SCALE).normalize()


def _line_dict(ln: InvoiceLine) -> dict:
    return {
        "line": ln.line_id,
        "meter": ln.meter,
        "environment": ln.environment,
        "unit": METERS[ln.meter].unit if ln.meter in METERS else None,
        "quantity": _quantity(ln.quantity_micros),
        "tiers": [
            {"tier": c.tier, "from": c.start, "up_to": c.up_to, "quantity": c.quantity,
             "unit_price": c.unit_price, "amount": c.amount}
            for c in ln.tiers
        ],
        "gross": cents_to_decimal(ln.gross_cents),
        "discount_percent": ln.discount_percent,
        "discount": cents_to_decimal(ln.discount_cents),
        "amount": cents_to_decimal(ln.amount_cents),
        "effective_unit_rate": ln.effective_unit_rate,
        "unpriced": ln.unpriced,
        "billed": ln.billed,
        "note": ln.note,
    }


def _breakdown_parts(alloc: pl.DataFrame, dim: str) -> list[dict]:
    """Parts of one dimension, largest amount first: amount and the per-line split."""
    from metering.allocate import effective_unit_rate

    rows = alloc.sort([dim, METER, ENVIRONMENT], nulls_last=True).iter_rows(named=True)
    parts: dict = {}
    for r in rows:
        key = r[dim]
        label = MINIMUM_COMMIT_PART if key is None else (key.isoformat() if isinstance(key, date) else key)
        part = parts.setdefault(label, {dim: label, "amount_cents": 0, "lines": []})
        part["amount_cents"] += r["amount_cents"]
        line = TRUE_UP if r[METER] == TRUE_UP else f"{r[METER]}/{r[ENVIRONMENT]}"
        part["lines"].append({
            "line": line,
            "quantity": _quantity(r[QUANTITY_MICROS]),
            "amount": cents_to_decimal(r["amount_cents"]),
            "effective_unit_rate": effective_unit_rate(r["amount_cents"], r[QUANTITY_MICROS]),
        })
    ordered = sorted(parts.values(), key=lambda p: (-p["amount_cents"], p[dim]))
    if dim == DAY:
        ordered = sorted(parts.values(), key=lambda p: (p[dim] == MINIMUM_COMMIT_PART, p[dim]))
    for p in ordered:
        p["amount"] = cents_to_decimal(p.pop("amount_cents"))
    return [{dim: p[dim], "amount": p["amount"], "lines": p["lines"]} for p in ordered]


def _funnel_dict(r: dict) -> dict:
    out = {}
    for k, v in r.items():
        if k.endswith("_micros"):
            out[k[: -len("_micros")]] = _quantity(v)
        elif k == "amount_cents":
            out["amount"] = cents_to_decimal(v)
        else:
            out[k] = v
    return out


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_summary(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_org, scope_of
    from metering.jsonout import dumps

    require_org(args, args.org)  # before anything is read: a foreign org is "no access"
    try:
        doc = summary_document(engine, args.org, args.period, scope_of(args))
    except (BadPeriod, UnknownOrg) as exc:
        return _fail(str(exc))
    if args.json:
        print(dumps(doc))
        return EXIT_OK
    print(f"{args.org} {doc['period']}")
    for m in METER_NAMES:
        print(f"  {METERS[m].label:<22}{doc[METERS[m].summary_key]:>14}")
    print("  cost per project:")
    for p in doc["project_breakdown"]:
        print(f"    {p['project']:<32}{p['cost_usd']:>14}")
    print(f"  total {doc['currency']} {doc['total_usd']}")
    return EXIT_OK


def _cmd_invoice(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_org, scope_of
    from metering.jsonout import dumps

    require_org(args, args.org)
    try:
        as_of = parse_as_of(args.as_of) if args.as_of else None
        doc = invoice_document(engine, args.org, args.period, as_of, orgs=scope_of(args))
    except (BadPeriod, UnknownOrg, BadAsOf) as exc:
        return _fail(str(exc))
    if args.json:
        print(dumps(doc))
    elif args.csv:
        sys.stdout.write(_lines_csv(doc))
    else:
        print(_lines_text(doc))
    return EXIT_OK


_CSV_FIELDS = ("line", "meter", "environment", "quantity", "gross", "discount_percent", "discount",
               "amount", "effective_unit_rate", "unpriced", "billed", "note")


def _lines_csv(doc: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_FIELDS)
    for ln in doc["lines"]:
        w.writerow(["" if ln[f] is None else _csv_value(ln[f]) for f in _CSV_FIELDS])
    w.writerow(["total", "", "", "", "", "", "", _csv_value(doc["total"]), "", "", "", ""])
    return buf.getvalue()


def _csv_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return format(v, "f")
    return str(v)


def _lines_text(doc: dict) -> str:
    head = f"Invoice {doc['org']} {doc['period']} ({doc['period_status']}"
    head += f", usage through {doc['usage_through']})" if doc["as_of"] else ")"
    out = [head]
    for ln in doc["lines"]:
        flag = " [unpriced]" if ln["unpriced"] else (" [not billed by policy]" if not ln["billed"] else "")
        out.append(f"  {ln['line']:<34}{ln['quantity']!s:>14}  {doc['currency']} {ln['amount']!s:>12}{flag}")
        for t in ln["tiers"]:
            rng = f"{t['from']}-{t['up_to']}" if t["up_to"] is not None else f">{t['from']}"
            out.append(f"      tier {t['tier']} ({rng}): {t['quantity']} x {t['unit_price']} = {t['amount']}")
        if ln["discount"]:
            out.append(f"      discount {ln['discount_percent']}%: -{ln['discount']}")
    out.append(f"  {'total':<48}  {doc['currency']} {doc['total']!s:>12}")
    out += [f"  warning: {w}" for w in doc["warnings"]]
    return "\n".join(out)


__all__ = [
    "BREAKDOWN_DIMENSIONS", "MINIMUM_COMMIT_PART", "NOT_BILLED_BY_POLICY", "TRUE_UP", "BadAsOf",
    "Invoice", "InvoiceLine", "UnknownOrg", "billable_quantities", "build_invoice", "eligible_usage",
    "invoice_document", "parse_as_of", "period_usage", "price_quantities", "register",
    "summary_document", "usage_through",
]
