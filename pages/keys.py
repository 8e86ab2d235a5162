"""Keys: per-key consumption, share, hygiene flags, last used."""

import streamlit as st

from ui import data
from ui.state import current_filters, today

f = current_filters()
st.title(f"API keys · {f.org}")
m = data.keys_model(f.org, f.period, f.compare_period, today(), f.projects, f.environments, f.workloads)

row = st.container(horizontal=True)
row.metric("Keys with traffic", f"{m.with_traffic}", border=True)
row.metric("Issued keys", f"{m.issued}", border=True)
row.metric("Revoked", f"{m.revoked}", border=True)
row.metric("Hygiene flags", f"{m.n_flags}", border=True,
           help="Used outside its environment, unused for 60+ days, revoked but used, unregistered, spend jumped.")

st.subheader("Hygiene flags")
if m.flags is not None:
    st.dataframe(m.flags, hide_index=True, width="stretch")
else:
    st.success("No hygiene flags for this org's keys.")

st.subheader("Consumption this period")
st.dataframe(m.consumption, hide_index=True, width="stretch", column_config={
    c: st.column_config.NumberColumn(format="dollar") for c in m.consumption.column_names if c.endswith("(USD)")})
