"""Invoice: the preview or a closed period's invoice, why it is this number, and downloads."""

import streamlit as st

from ui import data
from ui.fmt import usd
from ui.state import current_filters, today

f = current_filters()
ov = data.overview(f.org, f.period, f.compare_period, today())
m = data.invoice_model(f.org, f.period, f.compare_period, today())
doc = m.doc

st.title(f"Invoice · {f.org} · {f.period}")
st.caption(("Preview, month to date through " + doc["usage_through"]) if ov.is_open else "Closed period: final invoice.")
for w in doc["warnings"]:
    st.warning(w)

row = st.container(horizontal=True)
row.metric("Lines, net of discount", f"${doc['subtotal']:,}", border=True)
row.metric("Discount", f"${doc['discount']:,}", border=True, help=f"{doc['terms']['discount_percent']}% off every line")
row.metric("Minimum-commit true-up", f"${doc['true_up']:,}", border=True,
           help=f"Monthly minimum {doc['terms']['minimum_commit']}")
row.metric("Total", f"${doc['total']:,}", border=True)

st.subheader("Line items and tiers applied")
for ln in m.lines:
    with st.expander(f"{ln.label} — ${ln.amount:,}", expanded=False):
        if ln.tiers is not None:
            st.dataframe(ln.tiers, hide_index=True, width="stretch")
        st.caption(ln.caption)

st.subheader("Why is it this number: the billable funnel")
st.dataframe(m.funnel, hide_index=True, width="stretch")
st.caption("Traffic minus failed calls, webhook retries and policy exclusions is billable; tiers priced at zero "
           "are the free allowance; the rest is charged.")

st.subheader("Breakdown")
dim = st.segmented_control("Breakdown by", list(m.breakdowns), key="by", default="project", bind="query-params", required=True) or "project"
st.dataframe(m.breakdowns[dim], hide_index=True, width="stretch")

st.subheader("Downloads")
c1, c2 = st.columns(2)
c1.download_button("Line items (CSV)", m.csv, file_name=f"invoice-{f.org}-{f.period}.csv",
                   mime="text/csv", on_click="ignore")
c2.download_button("Invoice (JSON)", m.json, file_name=f"invoice-{f.org}-{f.period}.json",
                   mime="application/json", on_click="ignore")
st.caption(f"Total {usd(ov.invoice.total_cents)} — the same document `python -m metering invoice --org {f.org} "
           f"--period {f.period} --json` prints.")
