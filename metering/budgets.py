"""Budgets at org, project and api_key scope, and their threshold states.

Owns validation and CRUD of budgets (the functions the app and the CLI share:
``create_budget``, ``update_budget``, ``delete_budget``, ``list_budgets``), and the evaluation of
a budget against actual and projected spend: per threshold ``ok``, ``forecast`` (projected to
cross on a date) or ``crossed`` (the first day cumulative spend reached it).

Money is integer cents; a threshold of p percent of A cents is reached when
``cumulative_cents * 100 >= A * p`` (exact integer comparison), i.e. when the cumulative cents
reach ``ceil(A * p / 100)``, the threshold's ``threshold_cents``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

import polars as pl
import sqlalchemy as sa

from metering.domain import SLUG_RE
from metering.money import to_cents
from queries import budgets as q

SCOPES = ("org", "project", "api_key")
DEFAULT_THRESHOLDS = (50, 80, 100)
OK, FORECAST, CROSSED = "ok", "forecast", "crossed"
MAX_AMOUNT_CENTS = 10**15


class BudgetError(ValueError):
    """A budget value is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Budget:
    id: int
    org: str
    scope: str
    scope_value: str
    amount_cents: int
    thresholds: tuple[int, ...]
    name: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ThresholdState:
    percent: int
    threshold_cents: int  # ceil(amount * percent / 100): reached when cumulative cents >= this
    state: str  # ok | forecast | crossed
    on: date | None  # crossing day (actual or forecast)


@dataclass(frozen=True)
class BudgetEvaluation:
    budget: Budget
    period: str
    as_of: date
    actual_cents: int  # month-to-date spend of the scope
    projected_cents: int  # projected spend of the scope at period end
    thresholds: tuple[ThresholdState, ...]
    notes: tuple[str, ...] = ()

    @property
    def crossed(self) -> bool:
        return any(t.state == CROSSED for t in self.thresholds)


# --------------------------------------------------------------------------------------------
# CRUD


def create_budget(engine: sa.Engine, orgs: Collection[str], *, org: str, scope: str, scope_value: str,
                  amount_cents: int, thresholds: Sequence[int] | str = DEFAULT_THRESHOLDS,
                  name: str | None = None) -> Budget:
    """Validate and store a budget; one per (org, scope, scope_value)."""
    org = validate_org(org, orgs)
    scope = validate_scope(scope)
    scope_value = _validate_scope_value(engine, orgs, org, scope, scope_value)
    amount_cents = validate_amount_cents(amount_cents)
    ths = parse_thresholds(thresholds)
    name = _validate_name(name)
    if q.find_budget(engine, orgs, org, scope, scope_value) is not None:
        raise BudgetError("scope_value",
                          f"a budget for {scope} {scope_value!r} of org {org!r} already exists; edit it")
    bid = q.insert_budget(engine, orgs, org=org, scope=scope, scope_value=scope_value,
                          amount_cents=amount_cents, thresholds=_fmt(ths), name=name, now=_now())
    return get_budget(engine, orgs, bid)


def update_budget(engine: sa.Engine, orgs: Collection[str], budget_id: int, *,
                  amount_cents: int | None = None, thresholds: Sequence[int] | str | None = None,
                  name: str | None = None) -> Budget:
    """Change the amount, thresholds and/or name of a budget (scope is its identity: fixed)."""
    current = get_budget(engine, orgs, budget_id)
    values: dict = {}
    if amount_cents is not None:
        values["amount_cents"] = validate_amount_cents(amount_cents)
    if thresholds is not None:
        values["thresholds"] = _fmt(parse_thresholds(thresholds))
    if name is not None:
        values["name"] = _validate_name(name)
    if values:
        q.update_budget_row(engine, orgs, current.id, values, _now())
    return get_budget(engine, orgs, current.id)


def delete_budget(engine: sa.Engine, orgs: Collection[str], budget_id: int) -> None:
    if not q.delete_budget_row(engine, orgs, _validate_id(budget_id)):
        raise BudgetError("id", f"no budget with id {budget_id} in the orgs you can see")


def list_budgets(engine: sa.Engine, orgs: Collection[str], org: str | None = None) -> list[Budget]:
    return [_budget(r) for r in q.select_budgets(engine, orgs, org)]


def get_budget(engine: sa.Engine, orgs: Collection[str], budget_id: int) -> Budget:
    row = q.select_budget(engine, orgs, _validate_id(budget_id))
    if row is None:
        raise BudgetError("id", f"no budget with id {budget_id} in the orgs you can see")
    return _budget(row)


def find_budget(engine: sa.Engine, orgs: Collection[str], org: str, scope: str,
                scope_value: str) -> Budget | None:
    row = q.find_budget(engine, orgs, org, scope, scope_value)
    return _budget(row) if row else None


# --------------------------------------------------------------------------------------------
# validation


def parse_thresholds(value: Sequence[int] | str) -> tuple[int, ...]:
    """Percents 1..1000, strictly ascending, unique: "50,80,100" or [50, 80, 100]."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if not value.strip() or any(p == "" for p in parts):
            raise BudgetError("thresholds", f"expected percents like 50,80,100, got {value!r}")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise BudgetError("thresholds", f"expected whole percents like 50,80,100, got {value!r}") \
                from None
    else:
        nums = list(value)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in nums):
            raise BudgetError("thresholds", f"percents must be whole numbers, got {nums!r}")
    if not nums:
        raise BudgetError("thresholds", "at least one threshold percent is required")
    for n in nums:
        if not 1 <= n <= 1000:
            raise BudgetError("thresholds", f"{n} is outside 1..1000 percent")
    if any(b <= a for a, b in zip(nums, nums[1:], strict=False)):
        raise BudgetError("thresholds", f"percents must be ascending and unique, got {nums!r}")
    return tuple(nums)


def parse_amount(text: str) -> int:
    """A dollar amount like "2500" or "2500.50" as cents (at most two decimals, positive)."""
    try:
        d = Decimal(str(text).strip().replace(",", "").lstrip("$"))
    except InvalidOperation:
        raise BudgetError("amount", f"expected a dollar amount like 2500.00, got {text!r}") from None
    if not d.is_finite() or d != d.quantize(Decimal("0.01")):
        raise BudgetError("amount", f"at most two decimals (whole cents), got {text!r}")
    return validate_amount_cents(to_cents(d), field="amount")


def validate_amount_cents(amount_cents: int, field: str = "amount_cents") -> int:
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise BudgetError(field, f"must be whole cents (int), got {amount_cents!r}")
    if amount_cents <= 0:
        raise BudgetError(field, f"must be positive, got {amount_cents}")
    if amount_cents > MAX_AMOUNT_CENTS:
        raise BudgetError(field, f"{amount_cents} is implausibly large")
    return amount_cents


def validate_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise BudgetError("scope", f"must be one of {', '.join(SCOPES)}, got {scope!r}")
    return scope


def validate_org(org: str, orgs: Collection[str]) -> str:
    if not isinstance(org, str) or not SLUG_RE.match(org):
        raise BudgetError("org", f"not an org slug: {org!r}")
    if org not in set(orgs):
        raise BudgetError("org", f"org {org!r} is not one you can see")
    return org


# --------------------------------------------------------------------------------------------
# evaluation


def threshold_states(budget: Budget, actual: Sequence[tuple[date, int]],
                     projected: Sequence[tuple[date, int]] = (),
                     projected_total: tuple[date, int] | None = None) -> tuple[ThresholdState, ...]:
    """State of each threshold from cumulative spend per day.

    ``actual``: (day, cumulative cents) through as_of; ``projected``: (day, cumulative cents) for
    the days after as_of (point forecast); ``projected_total``: (period end, projected invoice of
    the scope) when it differs from the last projected day (e.g. a minimum-commit true-up).
    A threshold is ``crossed`` on the first actual day whose cumulative spend reaches it,
    ``forecast`` on the first projected day that reaches it, else ``ok``.
    """
    out = []
    actual = sorted(actual)
    future = sorted(projected) + ([projected_total] if projected_total else [])
    for pct in budget.thresholds:
        need = budget.amount_cents * pct  # compare cents * 100 against amount * percent
        state, on = OK, None
        for day, cents in actual:
            if cents * 100 >= need:
                state, on = CROSSED, day
                break
        if state == OK:
            for day, cents in future:
                if cents * 100 >= need:
                    state, on = FORECAST, day
                    break
        out.append(ThresholdState(pct, -(-need // 100), state, on))
    return tuple(out)


def evaluate_budget(budget: Budget, projection, scope_actual: Sequence[tuple[date, int]] | None = None
                    ) -> BudgetEvaluation:
    """Actual and forecast state of every threshold of ``budget`` for a ``metering.forecast.Projection``.

    Org scope: cumulative usage spend per day from the projection (actual through as_of, then the
    point forecast), plus the projected invoice total at period end (minimum commit included).
    Project / api_key scope: ``scope_actual`` is the scope's cumulative allocated spend per day
    (``cumulative_scope_spend``); its forecast scales the org's projected usage spend by the
    scope's month-to-date share, and a note says so.
    """
    daily = projection.daily.sort("day")
    org_actual = [(d, int(c)) for d, c in daily.select("day", "actual_cents").iter_rows() if c is not None]
    rows = daily.select("day", "actual_cents", "projected_cents").iter_rows()
    org_future = [(d, int(p)) for d, a, p in rows if a is None]
    period_end = daily["day"].max() if daily.height else projection.as_of
    notes: list[str] = []
    if budget.scope == "org":
        actual, future = org_actual, org_future
        projected_total = projection.total_cents
        last_usage = (future or actual)[-1][1] if (future or actual) else 0
        extra = None
        if projected_total > last_usage:
            extra = (period_end, projected_total)
            notes.append("The projected invoice includes the minimum-commitment true-up at period end.")
    else:
        actual = sorted(scope_actual or [])
        scope_mtd = actual[-1][1] if actual else 0
        org_mtd = org_actual[-1][1] if org_actual else 0
        share = Decimal(scope_mtd) / Decimal(org_mtd) if org_mtd > 0 else Decimal(0)
        future = [(d, to_cents(Decimal(c) * share / 100)) for d, c in org_future]  # cents, half up
        extra = None
        projected_total = future[-1][1] if future else scope_mtd
        if future:
            notes.append(
                f"The forecast for {budget.scope} {budget.scope_value} scales the org's projected spend by "
                f"its month-to-date share ({float(share):.1%})."
            )
    states = threshold_states(budget, actual, future, extra)
    return BudgetEvaluation(
        budget=budget, period=projection.period, as_of=projection.as_of,
        actual_cents=actual[-1][1] if actual else 0, projected_cents=projected_total,
        thresholds=states, notes=tuple(notes),
    )


def cumulative_scope_spend(usage, card, org: str, period: str, through: date, dimension: str
                           ) -> dict[str, list[tuple[date, int]]]:
    """Per value of ``dimension`` (project or api_key): cumulative allocated spend per day of the period.

    Day t's figure is the value's share (largest-remainder allocation by quantity) of the usage
    lines of the invoice as if the period ended on t; the minimum-commit true-up is not attributed.
    """
    from metering.allocate import allocate_invoice
    from metering.invoice import TRUE_UP, build_invoice
    from metering.periods import period_bounds

    start, _ = period_bounds(period)
    values = sorted(set(usage.filter(pl.col("org") == org)[dimension].unique().to_list()))
    out: dict[str, list[tuple[date, int]]] = {v: [] for v in values}
    day = start
    while day <= through:
        as_of = datetime(day.year, day.month, day.day, tzinfo=UTC)
        inv = build_invoice(usage, card, org, period, as_of=as_of)
        cents: dict[str, int] = {}
        if inv.subtotal_cents > 0:
            alloc = allocate_invoice(usage, inv, card, [dimension]).filter(pl.col("meter") != TRUE_UP)
            for v, c in alloc.group_by(dimension).agg(pl.col("amount_cents").sum()).iter_rows():
                cents[v] = int(c)
        for v in values:
            out[v].append((day, cents.get(v, 0)))
        day += timedelta(days=1)
    return out


# --------------------------------------------------------------------------------------------
# internals


def _validate_scope_value(engine, orgs, org: str, scope: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BudgetError("scope_value", f"a {scope} scope needs a value")
    value = value.strip()
    if scope == "org" and value != org:
        raise BudgetError("scope_value",
                          f"an org budget's value must be the org itself ({org!r}), got {value!r}")
    if len(value) > 128:
        raise BudgetError("scope_value", "longer than 128 characters")
    if not q.scope_value_exists(engine, orgs, org, scope, value):
        what = {"org": "org", "project": "project", "api_key": "API key"}[scope]
        raise BudgetError("scope_value", f"{what} {value!r} does not exist for org {org!r}")
    return value


def _validate_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > 200:
        raise BudgetError("name", "must be text of at most 200 characters")
    return name.strip() or None


def _validate_id(budget_id) -> int:
    try:
        return int(budget_id)
    except (TypeError, ValueError):
        raise BudgetError("id", f"not a budget id: {budget_id!r}") from None


def _fmt(ths: Sequence[int]) -> str:
    return ",".join(str(t) for t in ths)


def _budget(row: dict) -> Budget:
    return Budget(
        id=int(row["id"]), org=row["org"], scope=row["scope"], scope_value=row["scope_value"],
        amount_cents=int(row["amount_cents"]), thresholds=parse_thresholds(row["thresholds"]),
        name=row["name"], created_at=row.get("created_at"), updated_at=row.get("updated_at"),
    )


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "CROSSED", "DEFAULT_THRESHOLDS", "FORECAST", "OK", "SCOPES", "Budget", "BudgetError", "BudgetEvaluation",
    "ThresholdState", "create_budget", "cumulative_scope_spend", "delete_budget", "evaluate_budget",
    "find_budget", "get_budget", "list_budgets",
    "parse_amount", "parse_thresholds", "threshold_states", "update_budget",
]
