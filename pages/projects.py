"""Projects: drill-down org -> project -> environment -> key -> meter, daily trend, share of each line."""

import streamlit as st

from ui import charts, data
from ui.fmt import pct, usd
from ui.state import current_filters, today

f = current_filters()
st.title(f"Projects · {f.org}")
key = (f.org, f.period, f.compare_period, today())
pm = data.projects_model(*key, f.projects, f.environments, f.workloads)
if not pm.options:
    st.info("No project spend in this period and slice. Widen the filters or pick another period.")
    st.stop()

total = pm.total
project = st.selectbox("Project", list(pm.options), key="proj", bind="query-params",
                       help="Largest spend first.")
m = data.project_model(*key, project, f.projects, f.environments, f.workloads)
row = st.container(horizontal=True)
row.metric("Project spend", usd(m.spend), border=True)
row.metric("Share of the view", pct(m.spend / total) if total else "—", border=True)
row.metric("API keys", f"{m.api_keys}", border=True)
row.metric("Workloads", f"{m.workloads}", border=True)

st.subheader("Drill-down: environment → key → meter")
st.dataframe(m.tree, hide_index=True, width="stretch",
             column_config={"Spend": st.column_config.NumberColumn(format="dollar"),
                            "Billable quantity": st.column_config.NumberColumn(format="localized")})

c1, c2 = st.columns(2, gap="large")
with c1:
    st.subheader("Daily trend")
    charts.show(m.daily_spec)
with c2:
    st.subheader("Share of each invoice line")
    st.dataframe(m.shares, hide_index=True, width="stretch",
                 column_config={"Project": st.column_config.NumberColumn(format="dollar"),
                                "Line total": st.column_config.NumberColumn(format="dollar"),
                                "Share": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)})

st.subheader("All projects")
charts.show(pm.share_spec)
