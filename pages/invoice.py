"""Invoice: the preview or a closed period's invoice, why it is this number, and downloads."""

import csv
import io

import polars as pl
import streamlit as st

from metering.jsonout import dumps
from ui import charts, data
from ui.fmt import usd
from ui.state import current_filters, today

f = current_filters()
ov = data.overview(f.org, f.period, f.compare_period, today())
as_of = f"{ov.as_of.isoformat()}T00:00:00+00:00" if ov.is_open else None
doc = data.invoice_document(f.org, f.period, as_of)

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
for ln in doc["lines"]:
    label = charts.meter_label(ln["meter"]) + (f" · {ln['environment']}" if ln.get("environment") else "")
    with st.expander(f"{label} — ${ln['amount']:,}", expanded=False):
        tiers = ln.get("tiers") or []
        if tiers:
            st.dataframe(pl.DataFrame([{k: str(v) if v is not None else "" for k, v in t.items()} for t in tiers]),
                         hide_index=True, width="stretch")
        st.caption(" · ".join(f"{k}: {v}" for k, v in ln.items() if k not in ("tiers",) and v not in (None, "")))

st.subheader("Why is it this number: the billable funnel")
st.dataframe(pl.DataFrame([{k: (str(v) if v is not None else "") for k, v in r.items()} for r in doc["funnel"]]),
             hide_index=True, width="stretch")
st.caption("Traffic minus failed calls, webhook retries and policy exclusions is billable; tiers priced at zero "
           "are the free allowance; the rest is charged.")

st.subheader("Breakdown")
dim = st.segmented_control("Breakdown by", list(doc["breakdowns"]), key="by", default="project", bind="query-params", required=True) or "project"
bd = doc["breakdowns"][dim]
st.dataframe(pl.DataFrame([{k: (str(v) if v is not None else "") for k, v in r.items()} for r in bd]),
             hide_index=True, width="stretch")

st.subheader("Downloads")
buf = io.StringIO()
w = csv.writer(buf)
w.writerow(["meter", "environment", "quantity", "amount"])
for ln in doc["lines"]:
    w.writerow([ln["meter"], ln.get("environment") or "", ln.get("quantity", ""), ln["amount"]])
c1, c2 = st.columns(2)
c1.download_button("Line items (CSV)", buf.getvalue(), file_name=f"invoice-{f.org}-{f.period}.csv",
                   mime="text/csv", on_click="ignore")
c2.download_button("Invoice (JSON)", dumps(doc), file_name=f"invoice-{f.org}-{f.period}.json",
                   mime="application/json", on_click="ignore")
st.caption(f"Total {usd(ov.invoice.total_cents)} — the same document `python -m metering invoice --org {f.org} "
           f"--period {f.period} --json` prints.")
