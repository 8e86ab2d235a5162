"""Lanes: period-over-period change per lane, and what drove it (volume vs rate)."""

import streamlit as st

from ui import charts, data
from ui.fmt import md, signed_usd, usd
from ui.state import current_filters, today

LANE_DIMS = ["project", "workload", "api_key", "environment", "meter"]

f = current_filters()
st.title(f"Lanes · {f.org}")
dim = st.segmented_control("Lane dimension", LANE_DIMS, key="dim",
                           default="project", bind="query-params", required=True) or "project"
ov = data.overview(f.org, f.period, f.compare_period, today())
cmp = data.lanes_model(f.org, f.period, f.compare_period, today(), dim, f.projects, f.environments, f.workloads)
w0, w1 = ov.previous_window
st.caption(f"{f.period} {'month to date' if ov.is_open else ''} vs {f.compare_period} "
           f"({w0:%b %d} – {w1:%b %d}{', like-for-like' if ov.like_for_like else ''}). "
           "Lane spend is each lane's allocated share of the invoice lines (minimum-commit true-up excluded).")

row = st.container(horizontal=True)
row.metric("Current", usd(cmp.current_total), border=True)
row.metric("Previous", usd(cmp.previous_total), border=True)
row.metric("Change", signed_usd(cmp.total_delta), border=True,
           delta=None if cmp.total_delta_pct is None else f"{cmp.total_delta_pct:+.1f}%", delta_color="inverse")
row.metric("Volume effect", signed_usd(cmp.volume), border=True, help="(q1 − q0) × previous effective rate, per lane and meter.")
row.metric("Rate effect", signed_usd(cmp.rate), border=True, help="Change from the effective unit rate (tiers, discounts); holds the rounding residue.")

if cmp.n_lanes == 0:
    st.info("No spend in either window for this slice. Widen the filters or choose another period.")
    st.stop()

st.subheader("What drove the change")
charts.show(cmp.waterfall_spec)
if cmp.n_lanes > 12:
    st.caption(f"Top 12 lanes by absolute change shown; {cmp.n_lanes - 12} smaller lanes are in the table.")
if cmp.new or cmp.ended:
    st.markdown(" · ".join(filter(None, [
        f"**New lanes:** {', '.join(md(x) for x in cmp.new[:8])}" if cmp.new else "",
        f"**Ended lanes:** {', '.join(md(x) for x in cmp.ended[:8])}" if cmp.ended else ""])))

money = {c: st.column_config.NumberColumn(format="dollar") for c in
         ("Current", "Previous", "Change", "Volume effect", "Rate effect")}
st.dataframe(cmp.lanes, hide_index=True, width="stretch", column_config={
    **money, "Change %": st.column_config.NumberColumn(format="%.1f%%"),
    "Contribution (pp)": st.column_config.NumberColumn(format="%.2f")})
