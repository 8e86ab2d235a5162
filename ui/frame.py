"""The frame every page runs in: identity, the org gate, the page list, the shared filters.

app.py calls ``run_frame()`` and then runs the chosen page inside ``framed()``. A page script
that Streamlit executes directly, without app.py (its legacy ``pages/`` folder discovery does
that for the first run after a server start, and AppTest does it after ``switch_page``), calls
``current_filters()``, which runs the frame first: the identity check and the org gate hold for
every page, however it was started.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import streamlit as st

from metering.periods import utcnow
from queries.engine import DatabasePermissionDenied, DatabaseTimeout, DatabaseUnavailable
from ui import data
from ui.auth import current_user
from ui.nav import pages_for
from ui.state import Filters, no_access, requested_org, sidebar_filters

_run = threading.local()  # one script thread per session run: "is a page running inside the frame?"


def run_frame():
    """Sign-in, visible orgs, org gate (st.stop() on a foreign link), navigation, filters.

    Returns ``(page, filters)``; the page is what ``st.navigation`` chose."""
    try:
        user = current_user()  # stops with a sign-in / no-membership screen when needed
        orgs = data.visible_orgs(user.scope())
    except DatabaseUnavailable as exc:
        show_fault(exc, starting=True)
        st.stop()
    if not orgs:
        st.info("No usage data yet in the organizations you can see. Load events with `python -m "
                "metering ingest FILE...` or fill the demo with `python -m metering demo`, then reload.",
                icon=":material/inbox:")
        st.stop()
    org = requested_org(orgs)  # None: the link names a foreign or unknown org
    page = st.navigation(pages_for(user, org))
    if org is None:
        no_access()  # "No access" and st.stop(), before anything of any org renders
    filters = sidebar_filters(orgs, utcnow().date())
    st.session_state["filters"] = filters
    return page, filters


@contextmanager
def framed():
    """Run the chosen page inside the frame (pages then read the filters the frame resolved)."""
    _run.framed = True
    try:
        yield
    except DatabaseUnavailable as exc:
        show_fault(exc, starting=False)
    finally:
        _run.framed = False


def show_fault(exc: DatabaseUnavailable, *, starting: bool) -> None:
    """One clear message per database fault (no traceback, nothing partial of the page)."""
    if isinstance(exc, DatabaseTimeout):
        st.error(f"The database took longer than {data.statement_timeout_ms() / 1000:g} s to answer, so the "
                 "query was canceled and nothing partial is shown. Try a narrower filter or reload in a "
                 "moment; if it persists, the database is overloaded.", icon=":material/hourglass_disabled:")
    elif isinstance(exc, DatabasePermissionDenied):
        st.error("The database refused this action for the app's database role (a read-only login "
                 "cannot write). Ask an administrator to check METERING_DATABASE_URL.",
                 icon=":material/lock:")
    elif starting:
        st.error("The metering database is not reachable. Check METERING_DATABASE_URL and that the "
                 "server is running, then reload. (`make run` starts with a local SQLite demo.)",
                 icon=":material/cloud_off:")
    else:
        st.error("The metering database stopped answering while this page loaded. Check that the server "
                 "is running, then reload.", icon=":material/cloud_off:")


def page_filters() -> Filters:
    """The filters of this run; runs the frame first when the page was started without app.py."""
    if getattr(_run, "framed", False):
        return st.session_state["filters"]
    return run_frame()[1]
