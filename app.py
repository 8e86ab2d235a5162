"""Usage billing: the frame. Navigation, shared sidebar filters (kept in the URL), identity."""

from __future__ import annotations

import streamlit as st

from metering.periods import utcnow
from queries.engine import DatabaseUnavailable
from ui import data
from ui.auth import current_user
from ui.state import sidebar_filters

st.set_page_config(page_title="Usage billing", page_icon=":material/receipt_long:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Billing home", icon=":material/home:", default=True),
    st.Page("pages/lanes.py", title="Lanes", icon=":material/compare_arrows:", url_path="lanes"),
    st.Page("pages/projects.py", title="Projects", icon=":material/account_tree:", url_path="projects"),
    st.Page("pages/keys.py", title="Keys", icon=":material/key:", url_path="keys"),
    st.Page("pages/forecast.py", title="Forecast & alerts", icon=":material/trending_up:", url_path="forecast"),
    st.Page("pages/invoice.py", title="Invoice", icon=":material/receipt_long:", url_path="invoice"),
    st.Page("pages/data.py", title="Data", icon=":material/database:", url_path="data"),
]

user = current_user()
nav = st.navigation(PAGES)
if user.mode == "local":
    st.sidebar.caption(":material/person: Local demo mode: single user, every org visible.")

try:
    orgs = data.visible_orgs(user.orgs)
except DatabaseUnavailable:
    st.error("The metering database is not reachable. Check METERING_DATABASE_URL and that the "
             "server is running, then reload. (`make run` starts with a local SQLite demo.)",
             icon=":material/cloud_off:")
    st.stop()

if not orgs:
    st.info("No usage data yet. Load events with `python -m metering ingest FILE...` or fill the "
            "demo with `python -m metering demo`, then reload.", icon=":material/inbox:")
    st.stop()

st.session_state["filters"] = sidebar_filters(orgs, utcnow().date())
nav.run()
