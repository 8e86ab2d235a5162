"""Keys: per-key consumption, share, hygiene flags, last used."""

import polars as pl
import streamlit as st

from metering.keys import key_consumption, key_flags
from metering.overview import slice_frame
from ui import data
from ui.state import current_filters, today

f = current_filters()
st.title(f"API keys · {f.org}")
ov = data.overview(f.org, f.period, f.compare_period, today())
flt = f.slice()
usage = slice_frame(ov.usage, flt)
spend = slice_frame(ov.parts, flt).filter(pl.col("api_key").is_not_null())
cons = key_consumption(usage, spend)
keys = data.api_keys(f.org)
hist = data.org_usage(f.org, data.history_start(f.period, f.compare_period), ov.invoice.usage_through)
flags = key_flags(hist, keys, ov.invoice.usage_through,
                  current_spend=spend, previous_spend=slice_frame(ov.previous_parts, flt))

row = st.container(horizontal=True)
row.metric("Keys with traffic", f"{cons.height}", border=True)
row.metric("Issued keys", f"{keys.height}", border=True)
row.metric("Revoked", f"{keys['revoked_at'].is_not_null().sum()}", border=True)
row.metric("Hygiene flags", f"{flags.height}", border=True,
           help="Used outside its environment, unused for 60+ days, revoked but used, unregistered, spend jumped.")

st.subheader("Hygiene flags")
if flags.height:
    st.dataframe(flags.select(pl.col("api_key").alias("API key"), pl.col("flag").str.replace_all("_", " ").alias("Flag"),
                              pl.col("detail").alias("Detail"), pl.col("events").alias("Events")),
                 hide_index=True, width="stretch")
else:
    st.success("No hygiene flags for this org's keys.")

st.subheader("Consumption this period")
show_cols = [c for c in cons.columns if c not in ("org",)]
view = cons.select(show_cols)
money_cols = [c for c in view.columns if c.endswith("_cents")]
view = view.with_columns([(pl.col(c) / 100).alias(c.replace("_cents", " (USD)")) for c in money_cols]).drop(money_cols)
micros = [c for c in view.columns if c.endswith("_micros")]
view = view.with_columns([(pl.col(c) / 1_000_000).alias(c.replace("_micros", "")) for c in micros]).drop(micros)
last = keys.select("api_key", "environment", "project", "last_used_at", "revoked_at").rename(
    {"environment": "issued for", "project": "issued project"})
view = view.join(last, on="api_key", how="left")
st.dataframe(view, hide_index=True, width="stretch", column_config={
    c: st.column_config.NumberColumn(format="dollar") for c in view.columns if c.endswith("(USD)")})
