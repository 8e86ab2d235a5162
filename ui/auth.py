"""Who is looking: one seam (`current_user`) so tests and auth modes can set the user.

Modes (see docs/security.md when written):
- local (default, the embedded demo): a single local user who sees every org; a banner says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class User:
    user_id: str
    display: str
    mode: str  # "local" | "oidc" | "proxy"
    orgs: frozenset[str] | None  # None = every org (local admin)


def current_user() -> User:
    """The signed-in user. Tests may put a User in st.session_state['_test_user']."""
    forced = st.session_state.get("_test_user")
    if isinstance(forced, User):
        return forced
    return User("local", "Local demo user", "local", None)
