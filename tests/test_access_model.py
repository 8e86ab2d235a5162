"""The access model (metering/access.py) and the membership queries (queries/access.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.access import (
    LOCAL_USER,
    PLATFORM,
    AccessDenied,
    Role,
    check_org_name,
    check_user_id,
    principal_from_memberships,
)
from queries.access import grant, list_memberships, memberships_of, revoke
from queries.usage import UnscopedQuery


def test_roles_are_ordered_and_parsed():
    assert Role.VIEWER < Role.FINANCE < Role.ADMIN
    assert Role.parse(" Finance ") is Role.FINANCE
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        Role.parse("owner")


def test_scope_per_role_and_platform_membership():
    p = principal_from_memberships("F@Example.com", "", "proxy",
                                   {"acme": "finance", "beta": "viewer", "gamma": "admin", "x": "bogus"})
    assert p.user_id == "f@example.com"
    assert p.scope() == frozenset({"acme", "beta", "gamma"})  # unknown role names are ignored
    assert p.scope(Role.FINANCE) == frozenset({"acme", "gamma"})
    assert p.scope(Role.ADMIN) == frozenset({"gamma"})
    assert p.can("beta") and not p.can("beta", Role.FINANCE) and not p.can("delta")
    with pytest.raises(AccessDenied, match=r"needs the finance role in org 'beta' \(has viewer\)"):
        p.require("beta", Role.FINANCE)
    with pytest.raises(AccessDenied, match=r"'delta' \(not a member\)"):
        p.require("delta", Role.VIEWER)
    with pytest.raises(AccessDenied, match="platform admin"):
        p.require_platform()

    # a platform viewer reads every org (scope None) but writes only where an org role allows
    q = principal_from_memberships("v", "V", "oidc", {PLATFORM: "viewer", "acme": "admin"})
    assert q.scope() is None
    assert q.scope(Role.FINANCE) == frozenset({"acme"})
    assert q.role_in("zeta") is Role.VIEWER and q.role_in("acme") is Role.ADMIN
    assert LOCAL_USER.scope(Role.ADMIN) is None and LOCAL_USER.can("anything", Role.ADMIN)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "tab\there", "nul\x00"])
def test_user_id_rejected(bad):
    with pytest.raises(ValueError, match="user_id"):
        check_user_id(bad)


@pytest.mark.parametrize("bad", ["Acme", "a,b", "-x", "a" * 64, "acme'; drop table x;--", "é"])
def test_org_slug_rejected(bad):
    with pytest.raises(ValueError, match="not a valid org slug"):
        check_org_name(bad)


@given(st.text(max_size=80))
def test_org_slug_validation_never_admits_a_comma_or_quote(text):
    try:
        out = check_org_name(text)
    except ValueError:
        return
    assert out == PLATFORM or (set(out) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") and len(out) <= 63)


def test_membership_queries_are_scoped(engine):
    grant(engine, ["acme", PLATFORM], "A@X.io", "acme", "viewer")
    grant(engine, ["acme", PLATFORM], "a@x.io", "acme", "finance")  # same user: emails lowercase
    grant(engine, ["acme", PLATFORM], "root", PLATFORM, "admin")
    grant(engine, ["beta"], "b@x.io", "beta", "admin")
    assert memberships_of(engine, "a@x.io") == {"acme": "finance"}
    assert memberships_of(engine, "nobody") == {}
    assert list_memberships(engine, ["acme"]).rows() == [("a@x.io", "acme", "finance")]
    assert list_memberships(engine, ["beta", PLATFORM]).rows() == [("root", PLATFORM, "admin"),
                                                                   ("b@x.io", "beta", "admin")]
    with pytest.raises(UnscopedQuery, match="org 'beta' is outside"):
        grant(engine, ["acme"], "a@x.io", "beta", "admin")
    with pytest.raises(UnscopedQuery, match="platform memberships"):
        grant(engine, ["acme"], "a@x.io", PLATFORM, "admin")
    with pytest.raises(UnscopedQuery):
        list_memberships(engine, None)
    with pytest.raises(UnscopedQuery):
        revoke(engine, "acme", "a@x.io", "acme")  # a bare string is not a scope
    assert memberships_of(engine, "b@x.io") == {"beta": "admin"}  # nothing leaked by the refused calls
    assert revoke(engine, ["acme"], "a@x.io", "acme") is True
    assert revoke(engine, ["acme"], "a@x.io", "acme") is False
    assert memberships_of(engine, "a@x.io") == {}


def test_concrete_org_lists_for_edits_and_admin_pages():
    roles = {"acme": "finance", "beta": "viewer", "gamma": "admin"}
    p = principal_from_memberships("f@x", "", "proxy", roles)
    known = ["acme", "beta", "delta", "gamma"]
    assert p.orgs_with(Role.FINANCE, known) == ["acme", "gamma"]
    assert p.admin_orgs(known) == ["gamma"]
    root = principal_from_memberships("root", "", "oidc", {PLATFORM: "admin"})
    assert root.orgs_with(Role.FINANCE, known) == known
    assert root.admin_orgs(known) == [*known, PLATFORM]
    platform_finance = principal_from_memberships("pf", "", "oidc", {PLATFORM: "finance", "beta": "admin"})
    assert platform_finance.orgs_with(Role.FINANCE, known) == known
    assert platform_finance.admin_orgs(known) == ["beta"]  # no '*': platform role below admin
    assert LOCAL_USER.admin_orgs(["b", "a"]) == ["a", "b", PLATFORM]
