"""The page list per user: every signed-in user gets the billing pages; the Access page only
when they administer the current org (or hold the platform admin role)."""

from __future__ import annotations

import streamlit as st

from metering.access import Principal, Role


def pages_for(user: Principal, org: str | None) -> list:
    pages = [
        st.Page("pages/home.py", title="Billing home", icon=":material/home:", default=True),
        st.Page("pages/lanes.py", title="Lanes", icon=":material/compare_arrows:", url_path="lanes"),
        st.Page("pages/projects.py", title="Projects", icon=":material/account_tree:", url_path="projects"),
        st.Page("pages/keys.py", title="Keys", icon=":material/key:", url_path="keys"),
        st.Page("pages/forecast.py", title="Forecast & alerts", icon=":material/trending_up:", url_path="forecast"),
        st.Page("pages/invoice.py", title="Invoice", icon=":material/receipt_long:", url_path="invoice"),
        st.Page("pages/data.py", title="Data", icon=":material/database:", url_path="data"),
    ]
    if can_administer(user, org):
        pages.append(st.Page("pages/access.py", title="Access", icon=":material/admin_panel_settings:",
                             url_path="access"))
    return pages


def can_administer(user: Principal, org: str | None) -> bool:
    """Admin of the current org, or platform admin (local mode is platform admin)."""
    return user.platform_role() == Role.ADMIN or (org is not None and user.can(org, Role.ADMIN))
