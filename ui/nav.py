"""The page list per user: every signed-in user gets the billing pages; the Access page only
when they administer the current org (or hold the platform admin role)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from metering.access import Principal, Role

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"  # absolute: any entry script works


def pages_for(user: Principal, org: str | None) -> list:
    pages = [
        st.Page(PAGES_DIR / "home.py", title="Billing home", icon=":material/home:", default=True),
        st.Page(PAGES_DIR / "lanes.py", title="Lanes", icon=":material/compare_arrows:", url_path="lanes"),
        st.Page(PAGES_DIR / "projects.py", title="Projects", icon=":material/account_tree:", url_path="projects"),
        st.Page(PAGES_DIR / "keys.py", title="Keys", icon=":material/key:", url_path="keys"),
        st.Page(PAGES_DIR / "forecast.py", title="Forecast & alerts", icon=":material/trending_up:", url_path="forecast"),
        st.Page(PAGES_DIR / "invoice.py", title="Invoice", icon=":material/receipt_long:", url_path="invoice"),
        st.Page(PAGES_DIR / "data.py", title="Data", icon=":material/database:", url_path="data"),
    ]
    if can_administer(user, org):
        pages.append(st.Page(PAGES_DIR / "access.py", title="Access", icon=":material/admin_panel_settings:",
                             url_path="access"))
    return pages


def can_administer(user: Principal, org: str | None) -> bool:
    """Admin of the current org, or platform admin (local mode is platform admin)."""
    return user.platform_role() == Role.ADMIN or (org is not None and user.can(org, Role.ADMIN))
