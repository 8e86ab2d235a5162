"""Billing home: the live invoice shape, what drives it, and where it is heading."""

import polars as pl
import streamlit as st

from metering.domain import METERS
from metering.overview import is_sliced
from ui import charts, data
from ui.fmt import pct, signed_usd, usd
from ui.state import current_filters, today

f = current_filters()
ov = data.overview(f.org, f.period, f.compare_period, today())
m = data.home_model(f.org, f.period, f.compare_period, today(), f.projects, f.environments, f.workloads)
flt = f.slice()
total, prev_total = m.total, m.prev_total
elapsed, n_days = m.elapsed, m.n_days

st.title(f"{f.org} · {f.period}")
status = f"open, month to date through {ov.as_of:%b %d} (day {elapsed} of {n_days})" if ov.is_open else "closed"
scope = "whole org" if not is_sliced(flt) else "filtered slice: " + ", ".join(
    f"{k} = {', '.join(v)}" for k, v in flt.items() if v)
st.caption(f"Billing period {f.period} ({status}) · {scope} · compared with {f.compare_period}"
           + (" over the same elapsed days" if ov.like_for_like else ""))

# -- KPI row -------------------------------------------------------------------------------------
cpl = m.cost_per_lookup
row = st.container(horizontal=True)
row.metric("Month-to-date spend" if ov.is_open else "Invoice total", usd(total),
           delta=f"{signed_usd(total - prev_total)} vs {f.compare_period}" if prev_total or total else None,
           delta_color="inverse", border=True,
           help="Allocated share of every invoice line (tiers priced on the whole org). Compared with "
                "the same elapsed days of the comparison period while the period is open.")
p = ov.projection
if p is not None:
    row.metric("Projected at period end", usd(p.total_cents), border=True,
               delta=f"80% interval {usd(p.low_cents)} – {usd(p.high_cents)}", delta_color="off",
               delta_arrow="off",
               help="Whole org: forecast quantity per meter and environment priced through the tiers, "
                    "discount and minimum commit. See Forecast & alerts for the backtest.")
row.metric("Cost per successful lookup", "—" if cpl is None else f"${cpl:,.4f}", border=True,
           help="Spend of the slice divided by its billable HRS lookups (the main unit of value).")
heavy = m.heavy_cents
row.metric("Report & export jobs", usd(heavy), border=True,
           delta=f"{pct(heavy / total) if total else '—'} of spend", delta_color="off", delta_arrow="off",
           help="Heavy packaging work: finance/compliance report jobs and export records.")

# -- line items and driver -------------------------------------------------------------------------
left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Invoice line items")
    st.dataframe(m.lines, hide_index=True, column_config={
        "Amount": st.column_config.NumberColumn(format="dollar")}, width="stretch")
    if ov.invoice.terms.discount_percent:
        st.caption(f"Line amounts include the org discount of {ov.invoice.terms.discount_percent}%.")
with right:
    st.subheader("Largest spend driver")
    if total:
        if m.driver_headline:
            st.markdown(m.driver_headline)
        for caption in m.driver_captions:
            st.caption(caption)
    else:
        st.info("No billable spend in this view yet.")

# -- daily spend ---------------------------------------------------------------------------------
st.subheader("Daily spend by meter")
if m.daily_spec is not None:
    charts.show(m.daily_spec)
else:
    st.info("No spend in this period and slice. Widen the filters or pick another period.")

# -- threshold pressure, traffic, freshness -------------------------------------------------------
c1, c2 = st.columns(2, gap="large")
with c1:
    st.subheader("Threshold pressure")
    evals = data.budget_evaluations(f.org, today()) if ov.is_open else []
    if not ov.is_open:
        st.caption("Budgets are evaluated for the open period.")
    elif not evals:
        st.info("No budgets for this org. Create one on **Forecast & alerts**.")
    else:
        rows = []
        for ev in evals:
            worst = max(ev.thresholds, key=lambda t: ({"crossed": 2, "forecast": 1}.get(t.state, 0), t.percent))
            rows.append({
                "Budget": ev.budget.name or f"{ev.budget.scope} {ev.budget.scope_value}",
                "Used": ev.actual_cents / ev.budget.amount_cents,
                "Actual": ev.actual_cents / 100, "Projected": ev.projected_cents / 100,
                "Budget amount": ev.budget.amount_cents / 100,
                "State": f"{worst.percent}% {worst.state}" + (f" on {worst.on:%b %d}" if worst.on else ""),
            })
        st.dataframe(pl.DataFrame(rows).sort("Used", descending=True).to_arrow(), hide_index=True, width="stretch",
                     column_config={"Used": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1.2),
                                    "Actual": st.column_config.NumberColumn(format="dollar"),
                                    "Projected": st.column_config.NumberColumn(format="dollar"),
                                    "Budget amount": st.column_config.NumberColumn(format="dollar")})
with c2:
    st.subheader("Traffic by channel")
    st.dataframe(m.traffic, hide_index=True, width="stretch")
    st.caption("Delivery and operator traffic are shown apart from API traffic; failed calls and "
               "webhook retries are traffic, never charged.")

fr = data.freshness(f.org)
when = fr.latest_event_at.strftime("%Y-%m-%d %H:%M UTC") if fr.latest_event_at else "no events"
msg = f"Data as of {when} ({fr.state})"
if fr.restated_periods:
    msg += " · restated by late events: " + ", ".join(fr.restated_periods[:4])
st.caption(msg + f" · meters: {', '.join(m.label for m in METERS.values())}")
