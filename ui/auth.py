"""Who is looking: one seam (`current_user`) returning a `metering.access.Principal`.

Modes (docs/security.md, "Identity (app)"), from ``METERING_AUTH`` or chosen automatically:
- ``oidc``: Streamlit's built-in OpenID Connect login (``st.login``), configured by an ``[auth]``
  section in ``.streamlit/secrets.toml``; the user id is the token's email (else its ``sub``).
  Auto-selected when that section exists.
- ``proxy``: a trusted reverse proxy authenticates and passes the user in a header
  (``METERING_PROXY_HEADER``, default ``X-Forwarded-Email``). Only safe when the proxy strips
  that header from client requests and the app is reachable only through the proxy.
- ``local`` (default otherwise, the embedded demo): one local user who sees every org; a banner says so.

A signed-in user's roles come from the memberships table (``queries.access``), cached briefly.
Tests set the user in ``st.session_state["_test_user"]``: a Principal (used as is) or a user id
string (its memberships are loaded from the database, as for a signed-in user).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import streamlit as st

from metering.access import (
    LOCAL_USER,
    Principal,
    check_user_id,
    principal_from_memberships,
)
from queries.access import memberships_of

MODES = ("local", "oidc", "proxy")
DEFAULT_PROXY_HEADER = "X-Forwarded-Email"
TEST_USER_KEY = "_test_user"
PRINCIPAL_KEY = "_principal"


class AuthConfigError(ValueError):
    """METERING_AUTH (or the proxy header name) is misconfigured: the app refuses to guess."""


def auth_mode(env: Mapping[str, str], has_auth_secrets: bool) -> str:
    """The identity mode: METERING_AUTH if set (local|oidc|proxy), else oidc when secrets have an
    [auth] section, else local. An unknown value is an error, never a silent fallback to local
    (local mode shows every org)."""
    raw = (env.get("METERING_AUTH") or "").strip().lower()
    if not raw:
        return "oidc" if has_auth_secrets else "local"
    if raw not in MODES:
        raise AuthConfigError(f"METERING_AUTH={raw[:40]!r} is not one of {', '.join(MODES)}")
    return raw


def proxy_header_name(env: Mapping[str, str]) -> str:
    name = (env.get("METERING_PROXY_HEADER") or DEFAULT_PROXY_HEADER).strip()
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise AuthConfigError(f"METERING_PROXY_HEADER={name[:40]!r} is not a header name (letters, digits, '-')")
    return name


def user_from_headers(headers, header: str) -> str | None:
    """The user id the trusted proxy put in ``header``; None when missing, empty, malformed or
    repeated (two values mean a client-supplied copy got through: refuse rather than pick one).

    ``headers`` is ``st.context.headers`` (case-insensitive, ``get_all``) or any mapping."""
    if hasattr(headers, "get_all"):
        values = list(headers.get_all(header))
    else:
        lowered = {str(k).lower(): v for k, v in dict(headers).items()}
        v = lowered.get(header.lower())
        values = [] if v is None else (list(v) if isinstance(v, (list, tuple)) else [v])
    if len(values) != 1:
        return None
    try:
        return check_user_id(str(values[0])).lower()
    except ValueError:
        return None


def user_from_oidc(info: Mapping) -> str | None:
    """The user id from st.user's claims: the email, else the subject; None when not logged in."""
    if not info.get("is_logged_in"):
        return None
    for claim in ("email", "sub"):
        value = info.get(claim)
        if value:
            try:
                uid = check_user_id(str(value))
            except ValueError:
                continue
            return uid.lower() if claim == "email" else uid
    return None


@st.cache_data(ttl=30, max_entries=256, show_spinner=False)
def _memberships(user_id: str) -> dict[str, str]:
    from ui.data import reader

    # every org: a user's memberships span orgs (with RLS on, an unscoped reader sees none)
    return memberships_of(reader(None), user_id)


def principal_for(user_id: str, display: str, mode: str) -> Principal:
    """The principal of a signed-in user: roles from the memberships table (cached 30 s)."""
    return principal_from_memberships(user_id, display, mode, _memberships(user_id))


def clear_memberships_cache() -> None:
    _memberships.clear()


def _has_auth_secrets() -> bool:
    try:
        return bool(st.secrets.get("auth"))
    except Exception:  # no secrets.toml at all, or an unreadable one
        return False


def _stop_with(kind: str, message: str) -> None:
    getattr(st, kind)(message, icon=":material/lock:")
    st.stop()


def current_user() -> Principal:
    """The signed-in principal, or a screen (sign in / no access / misconfigured) and st.stop()."""
    forced = st.session_state.get(TEST_USER_KEY)
    if isinstance(forced, Principal):
        return _signed_in(forced)
    if isinstance(forced, str):
        return _signed_in(principal_for(forced, forced, "test"))
    try:
        mode = auth_mode(os.environ, _has_auth_secrets())
    except AuthConfigError as exc:
        _stop_with("error", f"Sign-in is misconfigured: {exc}.")
    if mode == "local":
        return _signed_in(LOCAL_USER)
    if mode == "proxy":
        try:
            header = proxy_header_name(os.environ)
        except AuthConfigError as exc:
            _stop_with("error", f"Sign-in is misconfigured: {exc}.")
        uid = user_from_headers(st.context.headers, header)
        if uid is None:
            _stop_with("warning", "Not signed in: the sign-in proxy did not identify you. "
                                  "Open the app through the company sign-in.")
        return _signed_in(principal_for(uid, uid, "proxy"))
    # oidc
    if not _has_auth_secrets():
        _stop_with("error", "Sign-in is misconfigured: METERING_AUTH=oidc needs an [auth] section "
                            "in .streamlit/secrets.toml (see docs/security.md).")
    uid = user_from_oidc(st.user)
    if uid is None:
        st.title("Usage billing")
        st.info("Billing data is confidential. Sign in to see your organizations.", icon=":material/lock:")
        if st.button("Sign in", type="primary", icon=":material/login:"):
            st.login()
        st.stop()
    name = st.user.get("name") or uid
    return _signed_in(principal_for(uid, str(name), "oidc"))


def _signed_in(p: Principal) -> Principal:
    """Record the principal for this run, show who is signed in; stop when they have no org."""
    st.session_state[PRINCIPAL_KEY] = p
    if p.is_local:
        st.sidebar.info("Local demo mode: single user, every org.", icon=":material/person:")
        return p
    st.sidebar.caption(f":material/person: {p.display} · {p.mode}")
    if p.mode == "oidc":
        if st.sidebar.button("Sign out", key="_sign_out"):
            st.logout()
    if not p.roles:
        _stop_with("warning", "You have no access to any organization. Ask an admin of your "
                              "organization for a membership.")
    return p


def principal() -> Principal:
    """The principal app.py resolved for this run (pages use it for role checks)."""
    p = st.session_state.get(PRINCIPAL_KEY)
    if not isinstance(p, Principal):
        raise RuntimeError("no principal for this run: app.py must call current_user() first")
    return p


