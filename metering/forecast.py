"""Invoice forecast: billable quantity per (meter, environment) to period end, priced through tiers.

Owns the daily calendar of eligible quantity, the three forecast methods (run-rate,
weekday-seasonal run-rate, damped Holt smoothing), the backtest on earlier closed periods
(MAPE of the projected invoice at day 7/14/21 and measured coverage of the 80% interval), the
per-series method choice, and ``project_invoice`` / ``projection_json``.

Quantities are forecast as floats (they are counts, not money) and turned into Decimal
(6 decimals, never negative) before pricing; every amount is integer cents or Decimal.
Pricing goes through ``metering.invoice.price_quantities`` (tiers, discount, minimum commit), so
the projected spend is non-linear in the projected usage.

Why the smoothing model is written here in numpy and not taken from statsforecast/statsmodels:
damped Holt is ~30 lines, and the backtest needs the filter state at every cut day without
refitting (one pass per series gives the one-step errors, the states and the parameter choice
made only with data before each cut). statsmodels would pull in scipy and patsy, statsforecast
numba and a JIT warm-up of seconds, for one model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import polars as pl

from metering.domain import (
    DAY,
    ELIGIBLE,
    ENVIRONMENT,
    METER,
    METERS,
    ORG,
    QUANTITY_MICROS,
    QUANTITY_SCALE,
)
from metering.money import json_money
from metering.periods import days_in_period, period_bounds, period_of, shift_period

RUN_RATE = "run_rate"
WEEKDAY_SEASONAL = "weekday_seasonal"
HOLT = "holt"
METHODS = (RUN_RATE, WEEKDAY_SEASONAL, HOLT)
METHOD_LABELS = {
    RUN_RATE: "run-rate (mean of last 7 days)",
    WEEKDAY_SEASONAL: "weekday-seasonal run-rate",
    HOLT: "damped Holt smoothing",
}

RUN_RATE_WINDOW = 7  # days averaged by the run-rate
SEASONAL_WEEKS = 4  # weeks of history for the weekday profile
REPORT_CUT_DAYS = (7, 14, 21)
BACKTEST_PERIODS = 6  # closed periods used by the backtest
INTERVAL = 0.80  # nominal coverage of the low/high band
NEIGHBOUR_CUTS = 2  # residuals pooled from cut days within +-2 of the horizon day
MIN_CLOSED_PERIODS = 2
MIN_HISTORY_DAYS = 14
WIDE_BAND = (0.5, 1.5)  # remaining-quantity multipliers when history is short
VERY_WIDE_BAND = (0.0, 2.0)  # fewer than 7 days of history
SERIES_KEY = (METER, ENVIRONMENT)
DAILY_SCHEMA = {DAY: pl.Date(), METER: pl.String(), ENVIRONMENT: pl.String(), QUANTITY_MICROS: pl.Int64()}

_Q6 = Decimal("0.000001")

Pricer = Callable[[dict, object, str], object]


@dataclass(frozen=True)
class SeriesProjection:
    """The forecast of one (meter, environment) to period end, in quantity units."""

    meter: str
    environment: str
    method: str
    mtd_quantity: Decimal
    remaining_quantity: Decimal  # point forecast for the days after as_of
    period_quantity: Decimal  # mtd + remaining
    period_quantity_low: Decimal
    period_quantity_high: Decimal
    band: tuple[float, float]  # multipliers applied to the remaining point forecast
    backtest_wape: dict[str, float] = field(default_factory=dict)  # method -> WAPE (0.05 = 5%)


@dataclass(frozen=True)
class CutAccuracy:
    """Backtest of the projected invoice total at one cut day, over the closed periods."""

    cut_day: int
    periods: int  # periods with a non-zero actual invoice
    mape: float | None  # chosen methods, fraction (0.05 = 5%)
    mape_run_rate: float | None  # run-rate everywhere, the baseline
    coverage: float | None  # share of periods whose actual total fell inside [low, high]


@dataclass(frozen=True)
class Projection:
    org: str
    period: str
    as_of: date  # usage through this day is actual; the days after it are forecast
    days_elapsed: int
    days_in_period: int
    series: tuple[SeriesProjection, ...]
    mtd_cents: int  # month-to-date invoice (minimum commit true-up included, as if billed now)
    total_cents: int  # projected invoice at period end: point, low, high
    low_cents: int
    high_cents: int
    daily: pl.DataFrame  # day, actual_cents, projected_cents, low_cents, high_cents (usage spend)
    backtest: tuple[CutAccuracy, ...]
    notes: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# public API


def daily_quantities(usage: pl.DataFrame, start: date | None = None, end: date | None = None) -> pl.DataFrame:
    """Eligible quantity per (day, meter, environment) on a joined calendar (missing days = 0).

    ``usage`` is the usage frame (``USAGE_SCHEMA``); only ``eligible`` rows count. The calendar
    runs from ``start`` (default: first day with usage) to ``end`` (default: last day with usage)
    for every series seen in the frame. Sorted by meter, environment, day.
    """
    elig = usage.filter(pl.col(ELIGIBLE)) if ELIGIBLE in usage.columns else usage
    agg = elig.group_by(DAY, METER, ENVIRONMENT).agg(pl.col(QUANTITY_MICROS).sum())
    if agg.height == 0:
        return pl.DataFrame(schema=DAILY_SCHEMA)
    lo = start or agg[DAY].min()
    hi = end or agg[DAY].max()
    if hi < lo:
        return pl.DataFrame(schema=DAILY_SCHEMA)
    keys = agg.select(SERIES_KEY).unique()
    cal = pl.DataFrame({DAY: pl.date_range(lo, hi, "1d", eager=True)})
    return (
        keys.join(cal, how="cross")
        .join(agg, on=[DAY, *SERIES_KEY], how="left")
        .with_columns(pl.col(QUANTITY_MICROS).fill_null(0).cast(pl.Int64))
        .select(list(DAILY_SCHEMA))
        .sort([*SERIES_KEY, DAY])
    )


def forecast_daily(values: Sequence[float], last_day: date, horizon: int, method: str) -> np.ndarray:
    """Per-day forecast for the ``horizon`` days after ``last_day``; ``values`` end on ``last_day``.

    run_rate: mean of the last 7 days. weekday_seasonal: the mean of each weekday over the last
    (up to) 4 full weeks, scaled so the profile's mean equals the last 7 days' mean. holt: damped
    additive-trend exponential smoothing, parameters picked from a grid by one-step squared error.
    Never negative.
    """
    y = np.asarray(values, dtype=float)
    if method == HOLT:
        return _holt_forecast(_HoltFit(y), len(y) - 1, horizon)
    return _forecast_at(y, len(y) - 1, last_day, horizon, method, None)


def backtest(daily: pl.DataFrame, periods: Iterable[str], cut_days: Iterable[int],
             methods: Sequence[str] = METHODS) -> pl.DataFrame:
    """Forecast each series from every cut day of every period to that period's end.

    ``daily`` is a ``daily_quantities`` frame covering the periods. Returns one row per (meter,
    environment, period, cut_day, method) with quantities in units (float): ``mtd`` (days 1..cut),
    ``forecast`` and ``actual`` (days after the cut). Cut days at or beyond the period's last day
    are skipped.
    """
    rows = []
    periods = list(periods)
    cut_days = sorted(set(cut_days))
    for (meter, env), sub in _series(daily):
        days = sub[DAY].to_list()
        y = sub[QUANTITY_MICROS].to_numpy().astype(float) / QUANTITY_SCALE
        first = days[0]
        holt = _HoltFit(y) if HOLT in methods else None
        for period in periods:
            p_start, p_end = period_bounds(period)
            i_start = (p_start - first).days
            i_end = (p_end - first).days
            if i_start < 0 or i_end >= len(y):
                continue
            for cut in cut_days:
                if cut >= days_in_period(period) or cut < 1:
                    continue
                t = i_start + cut - 1
                horizon = i_end - t
                mtd = float(y[i_start:t + 1].sum())
                actual = float(y[t + 1:i_end + 1].sum())
                cut_date = p_start + timedelta(days=cut - 1)
                for m in methods:
                    fc = float(_forecast_at(y, t, cut_date, horizon, m, holt).sum())
                    rows.append((meter, env, period, cut, m, mtd, fc, actual))
    return pl.DataFrame(
        rows, orient="row",
        schema={METER: pl.String(), ENVIRONMENT: pl.String(), "period": pl.String(), "cut_day": pl.Int64(),
                "method": pl.String(), "mtd": pl.Float64(), "forecast": pl.Float64(), "actual": pl.Float64()},
    )


def series_wape(bt: pl.DataFrame) -> pl.DataFrame:
    """Weighted absolute percentage error of the period quantity per series and method.

    WAPE = sum |forecast - actual| / sum (mtd + actual), over the backtest rows given; a series with
    no quantity at all gets 0 error for every method.
    """
    return (
        bt.group_by(METER, ENVIRONMENT, "method")
        .agg(
            (pl.col("forecast") - pl.col("actual")).abs().sum().alias("abs_err"),
            (pl.col("mtd") + pl.col("actual")).sum().alias("volume"),
        )
        .with_columns(
            pl.when(pl.col("volume") > 0).then(pl.col("abs_err") / pl.col("volume"))
            .otherwise(pl.when(pl.col("abs_err") > 0).then(float("inf")).otherwise(0.0))
            .alias("wape")
        )
        .sort(METER, ENVIRONMENT, "method")
    )


def choose_methods(bt: pl.DataFrame) -> dict[tuple[str, str], str]:
    """Per series, the method with the lowest WAPE, offered only if it strictly beats run-rate."""
    wape = series_wape(bt)
    best: dict[tuple[str, str], str] = {}
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for meter, env, method, w in wape.select(METER, ENVIRONMENT, "method", "wape").iter_rows():
        scores.setdefault((meter, env), {})[method] = w
    for key, s in scores.items():
        base = s.get(RUN_RATE, float("inf"))
        pick = RUN_RATE
        for m in METHODS:
            if m != RUN_RATE and m in s and s[m] < base and s[m] < s.get(pick, float("inf")):
                pick = m
        best[key] = pick
    return best


def residual_band(bt: pl.DataFrame, cut_day: int, coverage: float = INTERVAL) -> tuple[float, float] | None:
    """Empirical (low, high) multipliers of the remaining forecast: quantiles of actual/forecast.

    Uses rows whose cut day is within +-2 of ``cut_day`` and whose forecast is positive; None when
    fewer than 3 such residuals exist.
    """
    near = bt.filter(((pl.col("cut_day") - cut_day).abs() <= NEIGHBOUR_CUTS) & (pl.col("forecast") > 0))
    if near.height < 3:
        return None
    ratio = (near["actual"] / near["forecast"]).to_numpy()
    tail = (1.0 - coverage) / 2.0
    lo, hi = np.quantile(ratio, [tail, 1.0 - tail])
    return max(float(lo), 0.0), max(float(hi), float(lo), 0.0)


def history_start(period: str, backtest_periods: int = BACKTEST_PERIODS) -> date:
    """First day of the history a projection of ``period`` reads: its ``backtest_periods`` closed
    periods and the one before them (training data for the earliest backtest cut). Every caller
    (app, invoice JSON, alerts) gets the same projection whatever longer history it holds."""
    return period_bounds(shift_period(period, -backtest_periods - 1))[0]


def project_invoice(usage_history: pl.DataFrame, card, org: str, period: str, as_of: date | datetime,
                    *, backtest_periods: int = BACKTEST_PERIODS, pricer: Pricer | None = None) -> Projection:
    """Month-to-date invoice plus the projection of ``period`` to its end, as of ``as_of``.

    ``usage_history``: the usage frame of ``org`` (earlier periods included, for the backtest);
    only rows from ``history_start(period)`` through ``as_of``'s UTC date are read. Each (meter,
    environment) uses the method that won its backtest on the last ``backtest_periods`` closed
    periods (run-rate unless another beats it); the interval comes from the backtest residuals
    at the same day of month. ``card`` prices every period of the backtest (a later card change
    is not replayed).
    """
    price = pricer or _default_pricer()
    as_day = _as_date(as_of)
    p_start, p_end = period_bounds(period)
    if period_of(as_day) != period:
        raise ValueError(f"as_of {as_day.isoformat()} is not inside period {period}")
    if ORG in usage_history.columns:
        usage_history = usage_history.filter(pl.col(ORG) == org)
    first_day = history_start(period, backtest_periods)
    usage_history = usage_history.filter(pl.col(DAY).is_between(first_day, as_day))
    daily = daily_quantities(usage_history, end=as_day)
    n_days = days_in_period(period)
    elapsed = (as_day - p_start).days + 1
    notes: list[str] = []
    hist_start = daily[DAY].min() if daily.height else as_day
    history_days = (as_day - hist_start).days + 1 if daily.height else 0
    closed = _closed_periods(period, hist_start, backtest_periods) if daily.height else []

    short = len(closed) < MIN_CLOSED_PERIODS or history_days < MIN_HISTORY_DAYS
    bt = None
    choice: dict[tuple[str, str], str] = {}
    bt_summary: tuple[CutAccuracy, ...] = ()
    if short:
        band = VERY_WIDE_BAND if history_days < RUN_RATE_WINDOW else WIDE_BAND
        notes.append(
            f"Short history ({len(closed)} closed period(s), {history_days} day(s) of usage): every "
            f"series uses the run-rate (mean of the last {RUN_RATE_WINDOW} days) with a wide band "
            f"({band[0]:.0%} to {band[1]:.0%} of the remaining forecast), not a backtested interval."
        )
    elif as_day < p_end:
        cut = elapsed
        cuts = _cut_set([*REPORT_CUT_DAYS, cut])
        bt = backtest(daily, closed, cuts)
        choice = choose_methods(bt.filter(pl.col("cut_day").is_in(REPORT_CUT_DAYS)))
        bt_summary = _invoice_backtest(bt, closed, price, card, org)
        notes.append(
            f"Backtest on {len(closed)} closed period(s) ({closed[-1]} to {closed[0]}), priced with "
            f"the current rate card; a method other than run-rate is used only where it beat run-rate."
        )
    if as_day >= p_end:
        notes.append("The period is complete as of this date: the projection equals the actual usage.")

    wape_all = series_wape(bt.filter(pl.col("cut_day").is_in(REPORT_CUT_DAYS))) if bt is not None else None
    series_out: list[SeriesProjection] = []
    remaining_days = (p_end - as_day).days
    cum_point: dict[tuple[str, str], np.ndarray] = {}
    cum_low: dict[tuple[str, str], np.ndarray] = {}
    cum_high: dict[tuple[str, str], np.ndarray] = {}
    actual_daily: dict[tuple[str, str], np.ndarray] = {}
    wide_bands = 0
    for (meter, env), sub in _series(daily):
        key = (meter, env)
        y = sub[QUANTITY_MICROS].to_numpy().astype(float) / QUANTITY_SCALE
        micros = sub.filter(pl.col(DAY) >= p_start)[QUANTITY_MICROS].to_numpy()
        in_period = np.zeros(elapsed, dtype=np.int64)
        in_period[elapsed - len(micros):] = micros
        actual_daily[key] = in_period
        mtd = Decimal(int(in_period.sum())) / QUANTITY_SCALE
        method = choice.get(key, RUN_RATE)
        if remaining_days > 0:
            holt = _HoltFit(y) if method == HOLT else None
            per_day = _forecast_at(y, len(y) - 1, as_day, remaining_days, method, holt)
        else:
            per_day = np.zeros(0)
        if short or remaining_days == 0:
            lo_m, hi_m = (VERY_WIDE_BAND if history_days < RUN_RATE_WINDOW else WIDE_BAND)
        else:
            own = bt.filter((pl.col(METER) == meter) & (pl.col(ENVIRONMENT) == env)
                            & (pl.col("method") == method))
            b = residual_band(own, elapsed)
            if b is None:
                wide_bands += 1
                b = WIDE_BAND
            lo_m, hi_m = b
        cum = np.cumsum(per_day)
        cum_point[key], cum_low[key], cum_high[key] = cum, cum * lo_m, cum * hi_m
        rem = _qty(cum[-1]) if len(cum) else Decimal(0)
        wapes = {}
        if wape_all is not None:
            for m, w in wape_all.filter((pl.col(METER) == meter) & (pl.col(ENVIRONMENT) == env)).select(
                    "method", "wape").iter_rows():
                wapes[m] = w
        series_out.append(SeriesProjection(
            meter=meter, environment=env, method=method, mtd_quantity=mtd, remaining_quantity=rem,
            period_quantity=mtd + rem,
            period_quantity_low=mtd + (_qty(cum_low[key][-1]) if len(cum) else Decimal(0)),
            period_quantity_high=mtd + (_qty(cum_high[key][-1]) if len(cum) else Decimal(0)),
            band=(lo_m, hi_m), backtest_wape=wapes,
        ))
    if wide_bands:
        notes.append(f"{wide_bands} series had too few backtest residuals near day {elapsed}: "
                     f"they use a wide band ({WIDE_BAND[0]:.0%} to {WIDE_BAND[1]:.0%}).")
    for s in series_out:
        if s.method != RUN_RATE:
            notes.append(
                f"{s.meter}/{s.environment}: {METHOD_LABELS[s.method]} (backtest WAPE "
                f"{s.backtest_wape.get(s.method, 0):.1%} vs run-rate {s.backtest_wape.get(RUN_RATE, 0):.1%})."
            )

    mtd_q = {(s.meter, s.environment): s.mtd_quantity for s in series_out}
    mtd_cents = _total(price(mtd_q, card, org))
    total = _total(price({(s.meter, s.environment): s.period_quantity for s in series_out}, card, org))
    low = _total(price({(s.meter, s.environment): s.period_quantity_low for s in series_out}, card, org))
    high = _total(price({(s.meter, s.environment): s.period_quantity_high for s in series_out}, card, org))
    chart = _daily_chart(p_start, n_days, elapsed, actual_daily, cum_point, cum_low, cum_high,
                         price, card, org)
    return Projection(
        org=org, period=period, as_of=as_day, days_elapsed=elapsed, days_in_period=n_days,
        series=tuple(series_out), mtd_cents=mtd_cents, total_cents=total,
        low_cents=min(low, total), high_cents=max(high, total), daily=chart,
        backtest=bt_summary, notes=tuple(notes),
    )


def projection_json(p: Projection) -> dict:
    """The projection as JSON-ready data (money as Decimal, for metering.jsonout.dumps)."""
    return {
        "period": p.period,
        "as_of": p.as_of.isoformat(),
        "days_elapsed": p.days_elapsed,
        "days_in_period": p.days_in_period,
        "mtd_usd": json_money(p.mtd_cents),
        "projected_total_usd": json_money(p.total_cents),
        "projected_low_usd": json_money(p.low_cents),
        "projected_high_usd": json_money(p.high_cents),
        "interval": INTERVAL,
        "series": [
            {
                "meter": s.meter,
                "environment": s.environment,
                "method": s.method,
                "mtd_quantity": s.mtd_quantity,
                "forecast_quantity": s.period_quantity,
                "forecast_quantity_low": s.period_quantity_low,
                "forecast_quantity_high": s.period_quantity_high,
                "backtest_wape": {m: round(w, 4) for m, w in sorted(s.backtest_wape.items())
                                  if np.isfinite(w)},
            }
            for s in p.series
        ],
        "daily": [
            {
                "day": row[DAY].isoformat(),
                "actual_usd": None if row["actual_cents"] is None else json_money(row["actual_cents"]),
                "projected_usd": json_money(row["projected_cents"]),
                "low_usd": json_money(row["low_cents"]),
                "high_usd": json_money(row["high_cents"]),
            }
            for row in p.daily.iter_rows(named=True)
        ],
        "backtest": [
            {
                "cut_day": c.cut_day,
                "periods": c.periods,
                "mape": None if c.mape is None else round(c.mape, 4),
                "mape_run_rate": None if c.mape_run_rate is None else round(c.mape_run_rate, 4),
                "coverage": None if c.coverage is None else round(c.coverage, 4),
            }
            for c in p.backtest
        ],
        "notes": list(p.notes),
    }


def invoice_backtest(daily: pl.DataFrame, periods: Sequence[str], card, org: str,
                     pricer: Pricer | None = None, cut_days: Sequence[int] = REPORT_CUT_DAYS,
                     methods: Sequence[str] = METHODS) -> tuple[CutAccuracy, ...]:
    """MAPE of the projected invoice and coverage of its interval at each cut day (leave-one-out).

    For each closed period, the per-series method and the interval are chosen from the OTHER
    periods' backtest only, so the reported accuracy is out of sample.
    """
    bt = backtest(daily, periods, _cut_set(cut_days), methods)
    return _invoice_backtest(bt, list(periods), pricer or _default_pricer(), card, org, cut_days)


# --------------------------------------------------------------------------------------------
# internals


def _default_pricer() -> Pricer:
    from metering.invoice import price_quantities

    return price_quantities


def _total(invoice) -> int:
    return int(invoice.total_cents)


def _usage_cents(invoice) -> int:
    """Sum of the usage lines (the minimum-commit true-up excluded)."""
    return sum(int(line.amount_cents) for line in invoice.lines if line.meter in METERS)


def _qty(x: float) -> Decimal:
    """A float quantity as Decimal with 6 decimals, never negative."""
    if not np.isfinite(x) or x <= 0:
        return Decimal(0)
    return Decimal(repr(float(x))).quantize(_Q6, rounding=ROUND_HALF_UP)


def _as_date(as_of: date | datetime) -> date:
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None:
            raise ValueError("as_of must carry a UTC offset (e.g. 2026-03-14T12:00:00Z)")
        return as_of.astimezone(UTC).date()
    return as_of


def _closed_periods(period: str, hist_start: date, k: int) -> list[str]:
    """The last ``k`` periods before ``period`` fully covered by the history (newest first)."""
    out = []
    p = shift_period(period, -1)
    while len(out) < k:
        start, _ = period_bounds(p)
        if start < hist_start:
            break
        out.append(p)
        p = shift_period(p, -1)
    return out


def _cut_set(cuts: Iterable[int]) -> list[int]:
    return sorted({c + d for c in cuts for d in range(-NEIGHBOUR_CUTS, NEIGHBOUR_CUTS + 1) if c + d >= 1})


def _series(daily: pl.DataFrame):
    for key, sub in daily.sort([*SERIES_KEY, DAY]).group_by(SERIES_KEY, maintain_order=True):
        yield (key[0], key[1]), sub


def _forecast_at(y: np.ndarray, t: int, last_day: date, horizon: int, method: str,
                 holt: _HoltFit | None) -> np.ndarray:
    """Forecast ``horizon`` days after index ``t`` (the day ``last_day``) from ``y[:t+1]``."""
    if horizon <= 0:
        return np.zeros(0)
    hist = y[:t + 1]
    if len(hist) == 0:
        return np.zeros(horizon)
    level = float(hist[-RUN_RATE_WINDOW:].mean())
    if method == RUN_RATE:
        return np.full(horizon, max(level, 0.0))
    if method == WEEKDAY_SEASONAL:
        weeks = min(SEASONAL_WEEKS, len(hist) // 7)
        if weeks == 0:
            return np.full(horizon, max(level, 0.0))
        window = hist[-7 * weeks:]
        overall = float(window.mean())
        if overall <= 0:
            return np.full(horizon, max(level, 0.0))
        # position i of `window` falls on weekday (last_day.weekday() - (len-1-i)) mod 7
        wd = (last_day.weekday() - (len(window) - 1 - np.arange(len(window)))) % 7
        index = np.array([window[wd == d].mean() for d in range(7)]) / overall
        future_wd = (last_day.weekday() + 1 + np.arange(horizon)) % 7
        return np.maximum(level * index[future_wd], 0.0)
    if method == HOLT:
        return _holt_forecast(holt or _HoltFit(y[:t + 1]), t, horizon)
    raise ValueError(f"unknown forecast method {method!r}; expected one of {', '.join(METHODS)}")


_ALPHAS = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
_BETAS = np.array([0.0, 0.02, 0.05, 0.1, 0.2])
_PHIS = np.array([0.8, 0.9, 0.98])


class _HoltFit:
    """Damped Holt filter run once over a whole series for a grid of (alpha, beta, phi).

    Keeps level, trend and cumulative one-step squared error at every index, so the forecast at
    any cut uses only data up to that cut, including the parameter choice.
    """

    def __init__(self, y: np.ndarray):
        a, b, p = (g.ravel() for g in np.meshgrid(_ALPHAS, _BETAS, _PHIS, indexing="ij"))
        self.phi = p
        n, g = len(y), len(a)
        self.level = np.empty((n, g))
        self.trend = np.empty((n, g))
        self.sse = np.zeros((n, g))
        lvl = np.full(g, y[0] if n else 0.0)
        tr = np.zeros(g)
        sse = np.zeros(g)
        for i in range(n):
            if i > 0:
                pred = lvl + p * tr
                err = y[i] - pred
                sse = sse + err * err
                new = pred + a * err
                tr = b * (new - lvl) + (1 - b) * p * tr
                lvl = new
            self.level[i], self.trend[i], self.sse[i] = lvl, tr, sse


def _holt_forecast(fit: _HoltFit, t: int, horizon: int) -> np.ndarray:
    if horizon <= 0:
        return np.zeros(0)
    g = int(np.argmin(fit.sse[t]))
    phi = fit.phi[g]
    damp = np.cumsum(phi ** np.arange(1, horizon + 1))
    return np.maximum(fit.level[t, g] + damp * fit.trend[t, g], 0.0)


def _invoice_backtest(bt: pl.DataFrame, periods: list[str], price: Pricer, card, org: str,
                      cut_days: Sequence[int] = REPORT_CUT_DAYS) -> tuple[CutAccuracy, ...]:
    out = []
    main = bt.filter(pl.col("cut_day").is_in(list(cut_days)))
    for cut in cut_days:
        errs, base_errs, inside, n = [], [], 0, 0
        for period in periods:
            this = main.filter((pl.col("period") == period) & (pl.col("cut_day") == cut))
            if this.height == 0:
                continue
            others = bt.filter(pl.col("period") != period)
            choice = choose_methods(others.filter(pl.col("cut_day").is_in(list(cut_days))))
            actual_q, point_q, low_q, high_q, base_q = {}, {}, {}, {}, {}
            for (meter, env), sub in this.group_by(SERIES_KEY, maintain_order=True):
                key = (meter, env)
                m = choice.get(key, RUN_RATE)
                row = sub.filter(pl.col("method") == m).row(0, named=True)
                base = sub.filter(pl.col("method") == RUN_RATE).row(0, named=True)
                own = others.filter((pl.col(METER) == meter) & (pl.col(ENVIRONMENT) == env)
                                    & (pl.col("method") == m))
                lo_m, hi_m = residual_band(own, cut) or WIDE_BAND
                mtd = _qty(row["mtd"])
                actual_q[key] = mtd + _qty(row["actual"])
                point_q[key] = mtd + _qty(row["forecast"])
                low_q[key] = mtd + _qty(row["forecast"] * lo_m)
                high_q[key] = mtd + _qty(row["forecast"] * hi_m)
                base_q[key] = mtd + _qty(base["forecast"])
            actual = _total(price(actual_q, card, org))
            if actual <= 0:
                continue
            n += 1
            point = _total(price(point_q, card, org))
            errs.append(abs(point - actual) / actual)
            base_errs.append(abs(_total(price(base_q, card, org)) - actual) / actual)
            lo = min(_total(price(low_q, card, org)), point)
            hi = max(_total(price(high_q, card, org)), point)
            inside += int(lo <= actual <= hi)
        out.append(CutAccuracy(
            cut_day=cut, periods=n,
            mape=float(np.mean(errs)) if errs else None,
            mape_run_rate=float(np.mean(base_errs)) if base_errs else None,
            coverage=inside / n if n else None,
        ))
    return tuple(out)


def _daily_chart(p_start: date, n_days: int, elapsed: int, actual_daily, cum_point, cum_low, cum_high,
                 price: Pricer, card, org: str) -> pl.DataFrame:
    """Cumulative usage spend per day of the period: actual through as_of, then the band."""
    keys = sorted(actual_daily)
    mtd = {k: Decimal(int(actual_daily[k].sum())) / QUANTITY_SCALE for k in keys}
    rows = []
    for i in range(min(n_days, 31)):
        day = p_start + timedelta(days=i)
        if i < elapsed:
            q = {k: Decimal(int(actual_daily[k][:i + 1].sum())) / QUANTITY_SCALE for k in keys}
            c = _usage_cents(price(q, card, org)) if keys else 0
            rows.append((day, c, c, c, c))
        else:
            j = i - elapsed
            pts = []
            for cum in (cum_point, cum_low, cum_high):
                q = {k: mtd[k] + (_qty(cum[k][j]) if j < len(cum[k]) else Decimal(0)) for k in keys}
                pts.append(_usage_cents(price(q, card, org)) if keys else 0)
            rows.append((day, None, pts[0], min(pts[1], pts[0]), max(pts[2], pts[0])))
    return pl.DataFrame(rows, orient="row", schema={
        DAY: pl.Date(), "actual_cents": pl.Int64(), "projected_cents": pl.Int64(),
        "low_cents": pl.Int64(), "high_cents": pl.Int64(),
    })


__all__ = [
    "HOLT", "METHODS", "RUN_RATE", "WEEKDAY_SEASONAL", "CutAccuracy", "Projection", "SeriesProjection",
    "backtest", "choose_methods", "daily_quantities", "forecast_daily", "invoice_backtest",
    "project_invoice", "projection_json", "residual_band", "series_wape",
]
