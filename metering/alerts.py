"""Budget threshold alerts for a scheduler, and the `alerts` and `budgets` commands.

Owns ``evaluate_alerts`` (load usage and the rate card, project the invoice, evaluate every budget
of the visible orgs) and ``alerts_json``. `python -m metering alerts` exits 0 when no threshold
is crossed and 1 when some threshold is crossed, so a scheduler can act on the exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, date, datetime

import sqlalchemy as sa

from metering.access import Role
from metering.budgets import (
    SCOPES,
    BudgetError,
    BudgetEvaluation,
    create_budget,
    cumulative_scope_spend,
    delete_budget,
    evaluate_budget,
    find_budget,
    list_budgets,
    parse_amount,
    update_budget,
)
from metering.money import format_usd, json_money
from metering.periods import period_of

EXIT_OK = 0
EXIT_CROSSED = 1
EXIT_USAGE = 2


def evaluate_alerts(engine: sa.Engine, orgs: Collection[str], as_of: datetime | date,
                    org: str | None = None) -> list[BudgetEvaluation]:
    """Every budget of the visible orgs (or of ``org``) evaluated for the period containing as_of."""
    from metering.forecast import history_start, project_invoice
    from metering.pricing import card_for_period
    from queries.usage import load_usage

    as_day = as_of.astimezone(UTC).date() if isinstance(as_of, datetime) else as_of
    period = period_of(as_day)
    card = card_for_period(engine, period)
    budgets = list_budgets(engine, orgs, org)
    out: list[BudgetEvaluation] = []
    for one_org in sorted({b.org for b in budgets}):
        mine = [b for b in budgets if b.org == one_org]
        usage = load_usage(engine, [one_org], history_start(period), as_day)
        projection = project_invoice(usage, card, one_org, period, as_day)
        spend_by_dim: dict[str, dict] = {}
        for b in mine:
            scope_actual = None
            if b.scope != "org":
                if b.scope not in spend_by_dim:
                    spend_by_dim[b.scope] = cumulative_scope_spend(
                        usage, card, one_org, period, as_day, b.scope)
                scope_actual = spend_by_dim[b.scope].get(b.scope_value, [])
            ev = evaluate_budget(b, projection, scope_actual)
            if card is None:
                ev = replace(ev, notes=(
                    *ev.notes, f"No rate card is effective for {period}: all usage is priced at zero."))
            out.append(ev)
    return out


def alerts_json(evaluations: list[BudgetEvaluation], as_of: date) -> dict:
    """The `alerts --json` document (money as Decimal, for metering.jsonout.dumps)."""
    return {
        "as_of": as_of.isoformat(),
        "period": period_of(as_of),
        "crossed": sum(1 for e in evaluations if e.crossed),
        "budgets": [
            {
                "id": e.budget.id,
                "org": e.budget.org,
                "scope": e.budget.scope,
                "scope_value": e.budget.scope_value,
                "name": e.budget.name,
                "amount_usd": json_money(e.budget.amount_cents),
                "actual_usd": json_money(e.actual_cents),
                "projected_usd": json_money(e.projected_cents),
                "thresholds": [
                    {
                        "percent": t.percent,
                        "threshold_usd": json_money(t.threshold_cents),
                        "state": t.state,
                        "on": t.on.isoformat() if t.on else None,
                    }
                    for t in e.thresholds
                ],
                "notes": list(e.notes),
            }
            for e in evaluations
        ],
    }


def register(sub) -> None:
    """`alerts` and `budgets list|set|delete`."""
    p = sub.add_parser(
        "alerts",
        help="budget threshold states; exit 0 none crossed, 1 some crossed",
        description="Evaluate every budget for the period containing --as-of: per threshold ok, "
                    "forecast (projected to cross on DATE) or crossed (crossed on DATE). "
                    "Exit status: 0 no threshold crossed, 1 some threshold crossed, 2 bad input.",
    )
    p.add_argument("--org", default=None, help="only this org's budgets (default: every org with budgets)")
    p.add_argument("--as-of", default=None, help="RFC 3339 timestamp (default: now, UTC)")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=_cmd_alerts)

    b = sub.add_parser("budgets", help="list, set or delete budgets")
    bsub = b.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    p = bsub.add_parser("list", help="list budgets")
    p.add_argument("--org", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)
    p = bsub.add_parser("set", help="create a budget, or edit the one of the same scope")
    p.add_argument("--org", required=True)
    p.add_argument("--scope", choices=SCOPES, default="org")
    p.add_argument("--value", default=None, help="project or API key id (default: the org itself)")
    p.add_argument("--amount", required=True, help="per monthly period, in dollars, e.g. 2500.00")
    p.add_argument("--thresholds", default=None, help="percents, ascending, e.g. 50,80,100 (default)")
    p.add_argument("--name", default=None)
    p.set_defaults(func=_cmd_set)
    p = bsub.add_parser("delete", help="delete a budget by id or by scope")
    p.add_argument("--org", required=True)
    p.add_argument("--id", type=int, default=None)
    p.add_argument("--scope", choices=SCOPES, default=None)
    p.add_argument("--value", default=None)
    p.set_defaults(func=_cmd_delete)


# --------------------------------------------------------------------------------------------
# internals


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _parse_as_of(text: str | None) -> date:
    if not text:
        return datetime.now(UTC).date()
    from metering.invoice import BadAsOf, parse_as_of

    try:
        return parse_as_of(text).astimezone(UTC).date()
    except BadAsOf as exc:
        raise BudgetError("as_of", str(exc)) from None


def _cmd_alerts(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_org, scope_of
    from metering.jsonout import dumps
    from queries.budgets import budget_orgs, scope_value_exists

    try:
        as_day = _parse_as_of(args.as_of)
    except BudgetError as exc:
        return _fail(str(exc))
    if args.org is not None:
        require_org(args, args.org)
        if not scope_value_exists(engine, [args.org], args.org, "org", args.org):
            return _fail(f"unknown org {args.org!r}")
        orgs = [args.org]
    else:
        orgs = budget_orgs(engine, scope_of(args))  # None: the operator, every org
    evaluations = evaluate_alerts(engine, orgs, as_day, args.org)
    crossed = any(e.crossed for e in evaluations)
    if args.json:
        print(dumps(alerts_json(evaluations, as_day)))
    else:
        print(_alerts_text(evaluations, as_day))
    return EXIT_CROSSED if crossed else EXIT_OK


def _alerts_text(evaluations: list[BudgetEvaluation], as_day: date) -> str:
    if not evaluations:
        return f"no budgets to evaluate as of {as_day.isoformat()}"
    lines = [f"budgets as of {as_day.isoformat()} (period {period_of(as_day)})"]
    for e in evaluations:
        b = e.budget
        label = b.name or f"{b.scope} {b.scope_value}"
        lines.append(f"{b.org} / {label}: {format_usd(e.actual_cents)} spent, "
                     f"{format_usd(e.projected_cents)} projected, budget {format_usd(b.amount_cents)}")
        for t in e.thresholds:
            when = {"crossed": "crossed on", "forecast": "forecast to cross on"}.get(t.state)
            state = f"{when} {t.on.isoformat()}" if when else "ok"
            lines.append(f"  {t.percent:>4}% ({format_usd(t.threshold_cents)}): {state}")
        lines.extend(f"  note: {n}" for n in e.notes)
    n = sum(1 for e in evaluations if e.crossed)
    lines.append(f"{n} budget(s) with a crossed threshold" if n else "no threshold crossed")
    return "\n".join(lines)


def _cmd_list(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_org, scope_of
    from metering.jsonout import dumps
    from queries.budgets import budget_orgs

    if args.org:
        require_org(args, args.org)
    orgs = [args.org] if args.org else budget_orgs(engine, scope_of(args))
    budgets = list_budgets(engine, orgs, args.org)
    if args.json:
        print(dumps([
            {"id": b.id, "org": b.org, "scope": b.scope, "scope_value": b.scope_value, "name": b.name,
             "amount_usd": json_money(b.amount_cents), "thresholds": list(b.thresholds)}
            for b in budgets
        ]))
    elif not budgets:
        print("no budgets")
    else:
        for b in budgets:
            print(f"#{b.id} {b.org} {b.scope}={b.scope_value} {format_usd(b.amount_cents)} "
                  f"at {','.join(map(str, b.thresholds))}%" + (f" ({b.name})" if b.name else ""))
    return EXIT_OK


def _cmd_set(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_org

    require_org(args, args.org, Role.FINANCE)  # budget writes need finance
    orgs = [args.org]
    value = args.value if args.value is not None else args.org
    try:
        amount = parse_amount(args.amount)
        existing = find_budget(engine, orgs, args.org, args.scope, value)
        if existing is None:
            b = create_budget(engine, orgs, org=args.org, scope=args.scope, scope_value=value,
                              amount_cents=amount, thresholds=args.thresholds or "50,80,100", name=args.name)
            verb = "created"
        else:
            b = update_budget(engine, orgs, existing.id, amount_cents=amount, thresholds=args.thresholds,
                              name=args.name)
            verb = "updated"
    except BudgetError as exc:
        return _fail(str(exc))
    print(f"{verb} budget #{b.id}: {b.org} {b.scope}={b.scope_value} {format_usd(b.amount_cents)} "
          f"at {','.join(map(str, b.thresholds))}%")
    return EXIT_OK


def _cmd_delete(args, engine: sa.Engine) -> int:
    from metering.access_cli import require_org

    require_org(args, args.org, Role.FINANCE)
    orgs = [args.org]
    try:
        if args.id is not None:
            budget_id = args.id
        elif args.scope is not None:
            found = find_budget(engine, orgs, args.org, args.scope, args.value or args.org)
            if found is None:
                raise BudgetError("scope_value", f"no {args.scope} budget {args.value or args.org!r} "
                                                 f"for org {args.org!r}")
            budget_id = found.id
        else:
            raise BudgetError("id", "give --id N, or --scope and --value")
        delete_budget(engine, orgs, budget_id)
    except BudgetError as exc:
        return _fail(str(exc))
    print(f"deleted budget #{budget_id}")
    return EXIT_OK


__all__ = ["alerts_json", "evaluate_alerts", "register"]
