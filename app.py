"""Usage billing: the frame. Identity, the org gate, navigation, shared sidebar filters (in the URL)."""

from __future__ import annotations

import streamlit as st

from metering.periods import utcnow
from queries.engine import DatabaseUnavailable
from ui import data
from ui.auth import current_user
from ui.nav import pages_for
from ui.state import no_access, requested_org, sidebar_filters

st.set_page_config(page_title="Usage billing", page_icon=":material/receipt_long:", layout="wide")

try:
    user = current_user()  # stops with a sign-in / no-membership screen when needed
    orgs = data.visible_orgs(user.scope())
except DatabaseUnavailable:
    st.error("The metering database is not reachable. Check METERING_DATABASE_URL and that the "
             "server is running, then reload. (`make run` starts with a local SQLite demo.)",
             icon=":material/cloud_off:")
    st.stop()

if not orgs:
    st.info("No usage data yet in the organizations you can see. Load events with `python -m metering "
            "ingest FILE...` or fill the demo with `python -m metering demo`, then reload.",
            icon=":material/inbox:")
    st.stop()

org = requested_org(orgs)  # None: the link names a foreign or unknown org
nav = st.navigation(pages_for(user, org))
if org is None:
    no_access()  # "No access" and st.stop(), before anything of any org renders
st.session_state["filters"] = sidebar_filters(orgs, utcnow().date())
nav.run()
