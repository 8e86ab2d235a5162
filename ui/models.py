"""Display-ready page models: everything a page shows for one filter key, computed once.

A page run used to redo its Polars analytics, build its Altair charts (Vega-Lite conversion with
jsonschema validation), convert its Polars tables through pandas and rebuild its downloads on
every rerun, though nothing changes between reruns of the same link. The builders here do that
work once; ui/data.py caches their results per (org, period, compare period, today, slice, page
widget) and the pages only lay the results out.

Builders take a BillingOverview (or the invoice document) and filter values, never call
Streamlit elements, and return frozen dataclasses of immutable values: strings, ints, tuples,
``pyarrow.Table`` (handed to ``st.dataframe`` as is: no pandas round trip) and Vega-Lite dicts
(``ui.charts.spec``; rendered through ``ui.charts.show``, which copies them). The math is the
metering/ functions the pages called before; the numbers are unchanged.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from metering.concentration import driven_by, spend_concentration
from metering.domain import DIMENSION_LABELS
from metering.jsonout import dumps
from metering.keys import traffic_by_channel
from metering.lanes import lanes_period_over_period
from metering.overview import (
    BillingOverview,
    cost_per_billable_lookup,
    daily_spend,
    heavy_work_share,
    period_progress,
    slice_frame,
    spend_by_dimension,
    unit_cost,
)
from ui import charts
from ui.fmt import md, pct, qty


def table(frame: pl.DataFrame) -> pa.Table:
    """A display table for ``st.dataframe``: Arrow, so Streamlit serializes it without pandas."""
    return frame.to_arrow()


def _slice(projects, environments, workloads) -> dict[str, tuple[str, ...]]:
    return {"project": tuple(projects), "environment": tuple(environments), "workload": tuple(workloads)}


# -- Billing home ------------------------------------------------------------------------------

@dataclass(frozen=True)
class HomeModel:
    """No reference to the overview: a model may outlive its overview in the cache, and must not
    keep the overview's frames alive (pages read the overview from its own cache)."""
    total: int
    prev_total: int
    elapsed: int
    n_days: int
    cost_per_lookup: object  # Decimal | None
    heavy_cents: int
    lines: pa.Table
    driver_headline: str | None
    driver_captions: tuple[str, ...]
    daily_spec: dict | None
    traffic: pa.Table


def build_home(ov: BillingOverview, projects=(), environments=(), workloads=()) -> HomeModel:
    flt = _slice(projects, environments, workloads)
    parts = slice_frame(ov.parts, flt)
    prev_parts = slice_frame(ov.previous_parts, flt)
    total = int(parts["amount_cents"].sum()) if parts.height else 0
    prev_total = int(prev_parts["amount_cents"].sum()) if prev_parts.height else 0
    elapsed, n_days = period_progress(ov.period, ov.as_of)
    spend_cents, lookups_micros = cost_per_billable_lookup(parts)
    heavy, _ = heavy_work_share(parts)

    lines = (
        parts.group_by("meter", "environment")
        .agg(pl.col("quantity_micros").sum(), pl.col("amount_cents").sum())
        .sort("amount_cents", descending=True)
    )
    notes = {(ln.meter, ln.environment): ln for ln in ov.invoice.lines}
    line_table = pl.DataFrame({
        "Line": [charts.meter_label(m) for m in lines["meter"]],
        "Environment": [e or "—" for e in lines["environment"]],
        "Quantity": [qty(q / 1_000_000) if q else "—" for q in lines["quantity_micros"]],
        "Amount": [a / 100 for a in lines["amount_cents"]],  # display edge
        "Note": [("not billed by policy" if not notes[(m, e)].billed else
                  "unpriced" if notes[(m, e)].unpriced else notes[(m, e)].note or "")
                 if (m, e) in notes else "" for m, e in lines.select("meter", "environment").iter_rows()],
    }, schema={"Line": pl.String, "Environment": pl.String, "Quantity": pl.String, "Amount": pl.Float64,
               "Note": pl.String})

    headline, captions = None, []
    if total:
        for dim in ("project", "workload", "api_key"):
            known = parts.filter(pl.col(dim).is_not_null())
            spend = spend_by_dimension(known, dim)
            if spend.height == 0:
                continue
            conc = spend_concentration(spend, dim, top_n=3)
            if dim == "project":
                headline = f"**{md(driven_by(known, dim))}**"
            captions.append(f"{DIMENSION_LABELS[dim]}: top is **{md(conc.top)}** at {pct(conc.top_share)}; "
                            f"top 3 hold {pct(conc.top_n_share)}; HHI {conc.hhi_points:,.0f} / 10,000")

    daily = daily_spend(parts)
    daily_spec = charts.spec(charts.daily_spend_by_meter(daily)) if daily.height else None

    tr = traffic_by_channel(slice_frame(ov.usage, flt))
    traffic = tr.select(
        pl.col("channel").replace({"api": "API clients", "operator": "Operator console",
                                   "delivery": "Webhook delivery"}).alias("Channel"),
        pl.col("events").alias("Events"), pl.col("failed_events").alias("Failed"),
        pl.col("retry_events").alias("Retries"), pl.col("billable_events").alias("Billable"),
    )
    return HomeModel(total, prev_total, elapsed, n_days, unit_cost(spend_cents, lookups_micros), heavy,
                     table(line_table), headline, tuple(captions), daily_spec, table(traffic))


# -- Projects ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProjectsModel:
    """The slice's project spend (the selectbox options, largest first) and the share chart."""
    options: tuple[str, ...]
    total: int
    share_spec: dict | None


def build_projects(ov: BillingOverview, projects=(), environments=(), workloads=()) -> ProjectsModel:
    parts = slice_frame(ov.parts, _slice(projects, environments, workloads)).filter(pl.col("project").is_not_null())
    if parts.height == 0:
        return ProjectsModel((), 0, None)
    spend = spend_by_dimension(parts, "project")
    total = int(spend["amount_cents"].sum())
    share = charts.spec(charts.share_bars(spend.with_columns((pl.col("amount_cents") / total).alias("share")),
                                          "project", "Project"))
    return ProjectsModel(tuple(spend["project"].to_list()), total, share)


@dataclass(frozen=True)
class ProjectModel:
    """One project of the slice: its spend, drill-down, daily trend and share of each line."""
    spend: int
    api_keys: int
    workloads: int
    tree: pa.Table
    daily_spec: dict
    shares: pa.Table


def build_project(ov: BillingOverview, project: str, projects=(), environments=(), workloads=()) -> ProjectModel:
    parts = slice_frame(ov.parts, _slice(projects, environments, workloads)).filter(pl.col("project").is_not_null())
    pp = parts.filter(pl.col("project") == project)
    tree = (pp.group_by("environment", "api_key", "meter")
            .agg(pl.col("amount_cents").sum(), pl.col("quantity_micros").sum())
            .sort("amount_cents", descending=True))
    tree_view = tree.select(
        pl.col("environment").alias("Environment"), pl.col("api_key").alias("API key"),
        pl.col("meter").replace_strict({m: charts.meter_label(m) for m in tree["meter"].unique()}).alias("Meter"),
        (pl.col("quantity_micros") / 1_000_000).alias("Billable quantity"),
        (pl.col("amount_cents") / 100).alias("Spend"))
    lines = ov.parts.group_by("meter", "environment").agg(pl.col("amount_cents").sum().alias("line"))
    mine = pp.group_by("meter", "environment").agg(pl.col("amount_cents").sum().alias("project"))
    share = mine.join(lines, on=["meter", "environment"], how="left").sort("project", descending=True)
    share_view = share.select(
        pl.col("meter").replace_strict({m: charts.meter_label(m) for m in share["meter"].unique()}).alias("Line"),
        pl.col("environment").alias("Environment"),
        (pl.col("project") / 100).alias("Project"), (pl.col("line") / 100).alias("Line total"),
        (pl.col("project") / pl.col("line")).alias("Share"))
    return ProjectModel(int(pp["amount_cents"].sum()), pp["api_key"].n_unique(), pp["workload"].n_unique(),
                        table(tree_view), charts.spec(charts.daily_spend_by_meter(daily_spend(pp))),
                        table(share_view))


# -- Lanes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LanesModel:
    current_total: int
    previous_total: int
    total_delta: int
    total_delta_pct: float | None
    volume: int
    rate: int
    n_lanes: int
    waterfall_spec: dict | None
    new: tuple[str, ...]
    ended: tuple[str, ...]
    lanes: pa.Table | None


def build_lanes(ov: BillingOverview, dim: str, projects=(), environments=(), workloads=()) -> LanesModel:
    flt = _slice(projects, environments, workloads)
    cur = slice_frame(ov.parts, flt).filter(pl.col(dim).is_not_null())
    prev = slice_frame(ov.previous_parts, flt).filter(pl.col(dim).is_not_null())
    cmp = lanes_period_over_period(cur, prev, dim)
    vol = int(cmp.lanes["volume_effect_cents"].sum()) if cmp.lanes.height else 0
    rate = int(cmp.lanes["rate_effect_cents"].sum()) if cmp.lanes.height else 0
    spec, view = None, None
    if cmp.lanes.height:
        top = cmp.lanes.head(12)
        spec = charts.spec(charts.waterfall(top, dim, cmp.previous_total_cents,
                                            cmp.previous_total_cents + int(top["contribution_cents"].sum())))
        view = table(cmp.lanes.select(
            pl.col(dim).alias(DIMENSION_LABELS[dim]), pl.col("status").alias("Status"),
            (pl.col("current_cents") / 100).alias("Current"), (pl.col("previous_cents") / 100).alias("Previous"),
            (pl.col("delta_cents") / 100).alias("Change"), pl.col("delta_pct").alias("Change %"),
            (pl.col("volume_effect_cents") / 100).alias("Volume effect"),
            (pl.col("rate_effect_cents") / 100).alias("Rate effect"),
            pl.col("contribution_pp").alias("Contribution (pp)"),
        ))
    return LanesModel(cmp.current_total_cents, cmp.previous_total_cents, cmp.total_delta_cents, cmp.total_delta_pct,
                      vol, rate, cmp.lanes.height, spec, tuple(str(x) for x in cmp.new),
                      tuple(str(x) for x in cmp.ended), view)


# -- Invoice -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InvoiceLine:
    label: str
    amount: object  # Decimal, as in the document
    tiers: pa.Table | None
    caption: str


@dataclass(frozen=True)
class InvoiceModel:
    doc: dict  # the invoice document (read only)
    lines: tuple[InvoiceLine, ...]
    funnel: pa.Table
    breakdowns: dict  # dimension -> pa.Table (read only)
    csv: str
    json: str


def _strings(rows) -> pa.Table:
    return table(pl.DataFrame([{k: (str(v) if v is not None else "") for k, v in r.items()} for r in rows]))


def build_invoice(doc: dict) -> InvoiceModel:
    lines = []
    for ln in doc["lines"]:
        label = charts.meter_label(ln["meter"]) + (f" · {ln['environment']}" if ln.get("environment") else "")
        tiers = ln.get("tiers") or []
        lines.append(InvoiceLine(
            label, ln["amount"],
            table(pl.DataFrame([{k: str(v) if v is not None else "" for k, v in t.items()} for t in tiers]))
            if tiers else None,
            " · ".join(f"{k}: {v}" for k, v in ln.items() if k not in ("tiers",) and v not in (None, ""))))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["meter", "environment", "quantity", "amount"])
    for ln in doc["lines"]:
        w.writerow([ln["meter"], ln.get("environment") or "", ln.get("quantity", ""), ln["amount"]])
    return InvoiceModel(doc, tuple(lines), _strings(doc["funnel"]),
                        {dim: _strings(rows) for dim, rows in doc["breakdowns"].items()},
                        buf.getvalue(), dumps(doc))


def invoice_as_of(ov: BillingOverview) -> str | None:
    """The document's as-of instant for the overview's period (None: a closed period)."""
    return f"{ov.as_of.isoformat()}T00:00:00+00:00" if ov.is_open else None


# -- Forecast & alerts (the budget section stays live: it has its own 30 s cache and a form) ----

@dataclass(frozen=True)
class ForecastModel:
    band_spec: dict | None
    backtest: pa.Table | None
    series: pa.Table | None
    anomalies: pa.Table | None


def build_forecast(ov: BillingOverview, projects=(), environments=(), workloads=()) -> ForecastModel:
    from metering.anomalies import lane_anomalies
    from metering.forecast import METHOD_LABELS

    p = ov.projection
    band = backtest = series = None
    if p is not None:
        band = charts.spec(charts.forecast_band(p.daily))
        backtest = table(pl.DataFrame([{"Cut day": c.cut_day, "Periods": c.periods,
                                        "MAPE (chosen)": None if c.mape is None else c.mape * 100,
                                        "MAPE (run-rate)": None if c.mape_run_rate is None else c.mape_run_rate * 100,
                                        "Interval coverage": None if c.coverage is None else c.coverage * 100}
                                       for c in p.backtest]))
        series = table(pl.DataFrame([{
            "Meter": charts.meter_label(s.meter), "Environment": s.environment,
            "Method": METHOD_LABELS.get(s.method, s.method),
            "Forecast qty": float(s.period_quantity), "Low": float(s.period_quantity_low),
            "High": float(s.period_quantity_high)} for s in p.series]))
    hist_parts = slice_frame(ov.parts, _slice(projects, environments, workloads))
    per_lane = (hist_parts.filter(pl.col("day").is_not_null())
                .group_by("day", "project", "workload", "api_key", "meter").agg(pl.col("amount_cents").sum()))
    an = lane_anomalies(per_lane, min_history=7)
    anomalies = None
    if an.height:
        anomalies = table(an.head(20).select(
            pl.col("dimension").alias("Lane type"), pl.col("lane").alias("Lane"), pl.col("day").alias("Day"),
            (pl.col("amount_cents") / 100).alias("Spend"), (pl.col("baseline_cents") / 100).alias("Baseline"),
            (pl.col("impact_cents") / 100).alias("Impact"), pl.col("top_meter").alias("Top meter")))
    return ForecastModel(band, backtest, series, anomalies)


# -- API keys ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeysModel:
    with_traffic: int
    issued: int
    revoked: int
    n_flags: int
    flags: pa.Table | None
    consumption: pa.Table


def build_keys(ov: BillingOverview, keys: pl.DataFrame, history: pl.DataFrame,
               projects=(), environments=(), workloads=()) -> KeysModel:
    from metering.keys import key_consumption, key_flags

    flt = _slice(projects, environments, workloads)
    usage = slice_frame(ov.usage, flt)
    spend = slice_frame(ov.parts, flt).filter(pl.col("api_key").is_not_null())
    cons = key_consumption(usage, spend)
    flags = key_flags(history, keys, ov.invoice.usage_through,
                      current_spend=spend, previous_spend=slice_frame(ov.previous_parts, flt))
    flag_view = None
    if flags.height:
        flag_view = table(flags.select(pl.col("api_key").alias("API key"),
                                       pl.col("flag").str.replace_all("_", " ").alias("Flag"),
                                       pl.col("detail").alias("Detail"), pl.col("events").alias("Events")))
    view = cons.select([c for c in cons.columns if c not in ("org",)])
    money_cols = [c for c in view.columns if c.endswith("_cents")]
    view = view.with_columns([(pl.col(c) / 100).alias(c.replace("_cents", " (USD)")) for c in money_cols]).drop(money_cols)
    micros = [c for c in view.columns if c.endswith("_micros")]
    view = view.with_columns([(pl.col(c) / 1_000_000).alias(c.replace("_micros", "")) for c in micros]).drop(micros)
    last = keys.select("api_key", "environment", "project", "last_used_at", "revoked_at").rename(
        {"environment": "issued for", "project": "issued project"})
    view = view.join(last, on="api_key", how="left")
    return KeysModel(cons.height, keys.height, int(keys["revoked_at"].is_not_null().sum()), flags.height,
                     flag_view, table(view))


# -- Data --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RateCardModel:
    """The rate card in force for a period, as a display table, and one org's terms line."""
    caption: str
    tiers: pa.Table
    terms: str


def build_rate_card(card, org: str) -> RateCardModel:
    from metering.domain import ENVIRONMENTS, METER_NAMES

    rows = []
    for m in METER_NAMES:
        for e in ENVIRONMENTS:
            tiers = card.tiers(m, e)
            rows.append({"Meter": charts.meter_label(m), "Environment": e,
                         "Tiers": "unpriced (billed at zero)" if not tiers else "; ".join(
                             f"{'up to ' + format(t.up_to, ',') if t.up_to is not None else 'above'}: ${t.unit_price}"
                             for t in tiers)})
    terms = card.terms(org)
    return RateCardModel(f"Effective from {card.effective_from} · {card.currency}", table(pl.DataFrame(rows)),
                         f"Terms for {org}: discount {terms.discount_percent}% · minimum commit ${terms.minimum_commit} · "
                         f"webhooks {'billed' if terms.webhooks_billable else 'not billed by policy'}")
