"""Data: freshness, the rate card in force, quarantine with reasons; ingest runs (every org's) for
platform admins only."""

import streamlit as st

from metering.access import Role
from ui import data
from ui.auth import principal
from ui.state import current_filters

f = current_filters()
st.title(f"Data · {f.org}")
fr = data.freshness(f.org)
row = st.container(horizontal=True)
row.metric("Latest event", fr.latest_event_at.strftime("%Y-%m-%d %H:%M UTC") if fr.latest_event_at else "none", border=True)
row.metric("Freshness", fr.state, border=True)
row.metric("Restated periods", ", ".join(fr.restated_periods[:3]) or "none", border=True,
           help="Periods that received late events after they closed.")

st.subheader("Rate card in force")
rc = data.rate_card_model(f.org, f.period)
if rc is None:
    st.warning(f"No rate card is effective for {f.period}: every line is unpriced. Load one with "
               "`python -m metering pricing load FILE.toml`.")
else:
    st.caption(rc.caption)
    st.dataframe(rc.tiers, hide_index=True, width="stretch")
    st.caption(rc.terms)

if principal().platform_role() == Role.ADMIN:  # platform admins and local mode
    st.subheader("Recent ingest runs")
    st.caption("Every org's ingest runs (operator data): visible to platform admins only.")
    st.dataframe(data.ingest_runs(limit=30), hide_index=True, width="stretch")

st.subheader("Quarantine")
q = data.quarantine(f.org)
if q.num_rows:
    st.dataframe(q, hide_index=True, width="stretch")
else:
    st.success("No quarantined rows for this org.")
