"""Data: freshness, the rate card in force, quarantine with reasons; ingest runs (every org's) for
platform admins only."""

import polars as pl
import streamlit as st

from metering.access import Role
from metering.domain import ENVIRONMENTS, METER_NAMES
from queries.store import quarantine_rows
from ui import charts, data
from ui.auth import principal
from ui.state import current_filters

f = current_filters()
st.title(f"Data · {f.org}")
eng = data.reader([f.org])
fr = data.freshness(f.org)
row = st.container(horizontal=True)
row.metric("Latest event", fr.latest_event_at.strftime("%Y-%m-%d %H:%M UTC") if fr.latest_event_at else "none", border=True)
row.metric("Freshness", fr.state, border=True)
row.metric("Restated periods", ", ".join(fr.restated_periods[:3]) or "none", border=True,
           help="Periods that received late events after they closed.")

st.subheader("Rate card in force")
card = data.rate_card(f.period)
if card is None:
    st.warning(f"No rate card is effective for {f.period}: every line is unpriced. Load one with "
               "`python -m metering pricing load FILE.toml`.")
else:
    st.caption(f"Effective from {card.effective_from} · {card.currency}")
    rows = []
    for m in METER_NAMES:
        for e in ENVIRONMENTS:
            tiers = card.tiers(m, e)
            rows.append({"Meter": charts.meter_label(m), "Environment": e,
                         "Tiers": "unpriced (billed at zero)" if not tiers else "; ".join(
                             f"{'up to ' + format(t.up_to, ',') if t.up_to is not None else 'above'}: ${t.unit_price}"
                             for t in tiers)})
    st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch")
    terms = card.terms(f.org)
    st.caption(f"Terms for {f.org}: discount {terms.discount_percent}% · minimum commit ${terms.minimum_commit} · "
               f"webhooks {'billed' if terms.webhooks_billable else 'not billed by policy'}")

if principal().platform_role() == Role.ADMIN:  # platform admins and local mode
    st.subheader("Recent ingest runs")
    st.caption("Every org's ingest runs (operator data): visible to platform admins only.")
    st.dataframe(data.ingest_runs(limit=30), hide_index=True, width="stretch")

st.subheader("Quarantine")
q = quarantine_rows(eng, [f.org], limit=500)
if q.height:
    st.dataframe(q, hide_index=True, width="stretch")
else:
    st.success("No quarantined rows for this org.")
