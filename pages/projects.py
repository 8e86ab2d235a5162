"""Projects: drill-down org -> project -> environment -> key -> meter, daily trend, share of each line."""

import polars as pl
import streamlit as st

from metering.overview import daily_spend, slice_frame, spend_by_dimension
from ui import charts, data
from ui.fmt import pct, usd
from ui.state import current_filters, today

f = current_filters()
st.title(f"Projects · {f.org}")
ov = data.overview(f.org, f.period, f.compare_period, today())
parts = slice_frame(ov.parts, f.slice()).filter(pl.col("project").is_not_null())
if parts.height == 0:
    st.info("No project spend in this period and slice. Widen the filters or pick another period.")
    st.stop()

projects = spend_by_dimension(parts, "project")
total = int(projects["amount_cents"].sum())
options = projects["project"].to_list()
project = st.selectbox("Project", options, key="proj", bind="query-params",
                       help="Largest spend first.")
pp = parts.filter(pl.col("project") == project)
ptotal = int(pp["amount_cents"].sum())
row = st.container(horizontal=True)
row.metric("Project spend", usd(ptotal), border=True)
row.metric("Share of the view", pct(ptotal / total) if total else "—", border=True)
row.metric("API keys", f"{pp['api_key'].n_unique()}", border=True)
row.metric("Workloads", f"{pp['workload'].n_unique()}", border=True)

st.subheader("Drill-down: environment → key → meter")
tree = (pp.group_by("environment", "api_key", "meter")
        .agg(pl.col("amount_cents").sum(), pl.col("quantity_micros").sum())
        .sort("amount_cents", descending=True))
st.dataframe(tree.select(
    pl.col("environment").alias("Environment"), pl.col("api_key").alias("API key"),
    pl.col("meter").replace_strict({m: charts.meter_label(m) for m in tree["meter"].unique()}).alias("Meter"),
    (pl.col("quantity_micros") / 1_000_000).alias("Billable quantity"),
    (pl.col("amount_cents") / 100).alias("Spend")),
    hide_index=True, width="stretch",
    column_config={"Spend": st.column_config.NumberColumn(format="dollar"),
                   "Billable quantity": st.column_config.NumberColumn(format="localized")})

c1, c2 = st.columns(2, gap="large")
with c1:
    st.subheader("Daily trend")
    st.altair_chart(charts.daily_spend_by_meter(daily_spend(pp)), width="stretch")
with c2:
    st.subheader("Share of each invoice line")
    lines = ov.parts.group_by("meter", "environment").agg(pl.col("amount_cents").sum().alias("line"))
    mine = pp.group_by("meter", "environment").agg(pl.col("amount_cents").sum().alias("project"))
    share = mine.join(lines, on=["meter", "environment"], how="left").sort("project", descending=True)
    st.dataframe(share.select(
        pl.col("meter").replace_strict({m: charts.meter_label(m) for m in share["meter"].unique()}).alias("Line"),
        pl.col("environment").alias("Environment"),
        (pl.col("project") / 100).alias("Project"), (pl.col("line") / 100).alias("Line total"),
        (pl.col("project") / pl.col("line")).alias("Share")),
        hide_index=True, width="stretch",
        column_config={"Project": st.column_config.NumberColumn(format="dollar"),
                       "Line total": st.column_config.NumberColumn(format="dollar"),
                       "Share": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)})

st.subheader("All projects")
st.altair_chart(charts.share_bars(projects.with_columns((pl.col("amount_cents") / total).alias("share")),
                                  "project", "Project"), width="stretch")
