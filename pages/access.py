"""Access: list, grant and revoke memberships in the orgs the signed-in user administers."""

import polars as pl
import streamlit as st

from metering.access import PLATFORM, ROLE_NAMES
from queries.access import grant, list_memberships, revoke
from queries.usage import UnscopedQuery
from ui import data
from ui.auth import clear_memberships_cache, principal
from ui.fmt import md
from ui.nav import can_administer
from ui.state import current_filters

f = current_filters()
me = principal()
if not can_administer(me, f.org):  # the page is not in the menu then; a direct call is refused too
    st.error(f"No access: managing memberships needs the admin role in {f.org}.", icon=":material/block:")
    st.stop()

orgs = me.admin_orgs(data.visible_orgs(me.scope()))
eng = data.writer(orgs)
st.title("Access")
st.caption("Memberships in the organizations you administer: "
           + ", ".join("platform (every org)" if o == PLATFORM else o for o in orgs)
           + ". Roles: viewer reads; finance also edits budgets; admin also manages memberships "
             "(platform admin: rate cards and every org). Changes apply within 30 seconds.")


def _user_id(text: str) -> str:
    uid = text.strip()
    return uid.lower() if "@" in uid else uid  # emails are compared lowercase at sign-in


left, right = st.columns(2, gap="large")
with left, st.form("grant_form", clear_on_submit=True):
    st.subheader("Grant or change a role")
    uid = st.text_input("User (email or OIDC subject)", key="g_user", max_chars=200)
    org = st.selectbox("Organization", orgs, key="g_org",
                       index=orgs.index(f.org) if f.org in orgs else 0,
                       format_func=lambda o: "* (platform: every org)" if o == PLATFORM else o)
    role = st.selectbox("Role", ROLE_NAMES, key="g_role")
    if st.form_submit_button("Grant", type="primary"):
        try:
            grant(eng, orgs, _user_id(uid), org, role)
            clear_memberships_cache()
            st.success(f"{md(_user_id(uid))} is now {role} in {org}.")
        except (ValueError, UnscopedQuery) as exc:
            st.error(f"Not granted: {md(exc)}")

members = list_memberships(eng, orgs)
with right:
    st.subheader("Revoke a membership")
    rows = members.rows()
    if rows:
        pick = st.selectbox("Membership", range(len(rows)), key="r_pick",
                            format_func=lambda i: f"{rows[i][0]} · {rows[i][1]} · {rows[i][2]}")
        if st.button("Revoke", key="r_go"):
            uid_r, org_r, _ = rows[pick]
            try:
                revoke(eng, orgs, uid_r, org_r)
                clear_memberships_cache()
                st.session_state["_access_flash"] = f"Revoked {md(uid_r)} in {org_r}."
                st.rerun()
            except (ValueError, UnscopedQuery) as exc:
                st.error(f"Not revoked: {md(exc)}")
    else:
        st.info("No memberships yet in these organizations.")
    if flash := st.session_state.pop("_access_flash", None):
        st.success(flash)

st.subheader("Memberships")
st.dataframe(members.select(pl.col("user_id").alias("User"), pl.col("org").alias("Organization"),
                            pl.col("role").alias("Role")), hide_index=True, width="stretch")
