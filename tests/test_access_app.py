"""Access control in the app: identity modes, org isolation on every page, role gating, the
Access page, and allow-listed URL params (Hypothesis fuzzing of the pure validators).

Org A = acme-insurance, org B = borealis-health (demo data). Users (memberships in the demo
database): a@x viewer of A, f@x finance of A, ad@x admin of A, n@x none. Signed-in users come
through the real OIDC path: METERING_AUTH=oidc, an [auth] secrets section and AppTest.user
(what st.user returns after st.login); the `_test_user` session seam is tested too.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from streamlit.runtime.context import StreamlitHeaders
from streamlit.testing.v1 import AppTest

from metering.access import LOCAL_USER, Principal, Role
from metering.budgets import BudgetError, create_budget, delete_budget, find_budget
from metering.cli import main as cli_main
from metering.periods import shift_period
from queries.access import grant, memberships_of, revoke
from queries.engine import make_engine
from tests.conftest import ROOT
from ui.auth import AuthConfigError, auth_mode, proxy_header_name, user_from_headers, user_from_oidc
from ui.fmt import _MD_SPECIAL as MD_SPECIAL
from ui.fmt import md
from ui.state import FILTER_KEYS, MAX_VALUE_LEN, SINGLE_VALUED, resolve_org, validate_params

APP = str(ROOT / "app.py")
ORG_A, ORG_B = "acme-insurance", "borealis-health"
B_PROJECTS = ("borealis-sandbox", "clinical-credentialing")
PAGES = ["pages/home.py", "pages/lanes.py", "pages/projects.py", "pages/keys.py",
         "pages/forecast.py", "pages/invoice.py", "pages/data.py", "pages/access.py"]
MEMBERS = {"a@x": "viewer", "f@x": "finance", "ad@x": "admin"}
AUTH_SECRETS = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-secret",
                "client_id": "id", "client_secret": "secret",
                "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}


def _clear_caches():
    from streamlit import cache_data, cache_resource

    cache_data.clear()
    cache_resource.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def demo(request, monkeypatch):
    """The demo database (SQLite or PostgreSQL) with memberships of org A; the app in OIDC mode."""
    url = request.getfixturevalue("demo_sqlite_url" if request.param == "sqlite" else "demo_pg_url")
    eng = make_engine(url)
    for uid, role in MEMBERS.items():
        grant(eng, [ORG_A], uid, ORG_A, role)
    revoke(eng, [ORG_A], "n@x", ORG_A)
    monkeypatch.setenv("METERING_DATABASE_URL", url)
    monkeypatch.setenv("METERING_AUTH", "oidc")
    _clear_caches()
    yield url, eng
    eng.dispose()


def _app(params: dict, page: str | None = None, user: str | None = None, *, oidc: bool = True,
         seam=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if oidc:
        at.secrets["auth"] = AUTH_SECRETS
    at.user = {"is_logged_in": True, "email": user, "name": user} if user else {}
    if seam is not None:
        at.session_state["_test_user"] = seam
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page:
        if str(ROOT / page) in {str(i.get("script_path")) for i in at._registered_pages.values()}:
            at.switch_page(page).run()
        else:  # not in this user's page list: run the page script itself, as a typed URL could
            direct = AppTest.from_file(str(ROOT / page), default_timeout=120)
            direct.secrets, direct.user, direct.query_params = at.secrets, at.user, dict(params)
            if seam is not None:
                direct.session_state["_test_user"] = seam
            return direct.run()
    return at


def _rendered(at: AppTest) -> str:
    """Everything the run sent to the browser: every element and block proto of main and sidebar
    (dataframes are Arrow bytes in the proto: their ascii strings appear verbatim)."""
    out = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
    return "\n".join(out)


def _money_forms(amount) -> list[str]:
    return [f"${amount:,.2f}", f"{amount:,.2f}", f"{amount:.2f}"]


@pytest.fixture
def b_total(demo, demo_period, capsys) -> list[str]:
    """Org B's closed-period invoice total, as the CLI prints it, in the forms a page could show."""
    url, _ = demo
    capsys.readouterr()
    assert cli_main(["--database-url", url, "invoice", "--org", ORG_B, "--period",
                     shift_period(demo_period, -1), "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total > 0
    return _money_forms(total)


@pytest.mark.parametrize("page", PAGES)
def test_link_to_another_org_shows_no_access_and_nothing_of_it(demo, demo_period, b_total, page):
    closed = shift_period(demo_period, -1)
    user = "ad@x" if page == "pages/access.py" else "a@x"
    at = _app({"org": ORG_B, "period": closed}, page, user)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "No access"
    assert any("No access" in e.value for e in at.error)
    text = _rendered(at)
    for leaked in [*b_total, *B_PROJECTS, "borealis"]:
        assert leaked not in text, f"{leaked!r} of org B rendered on {page}"
    assert not at.metric and not at.dataframe and not at.get("download_button")
    assert not at.get("vega_lite_chart")
    assert not at.sidebar.selectbox  # no filters (no org list, no B projects) either

    # control: the same user, same page, own org renders its data (so the checks above can fail)
    own = _app({"org": ORG_A, "period": closed}, page, user)
    assert not own.exception, [e.value for e in own.exception]
    assert own.title[0].value != "No access"
    assert ORG_A in _rendered(own)
    if page == "pages/home.py":  # the element checks above see charts and metrics when there are any
        assert own.get("vega_lite_chart") and own.metric


def test_no_access_button_opens_own_org(demo, demo_period):
    at = _app({"org": ORG_B}, None, "a@x")
    assert at.title[0].value == "No access"
    next(b for b in at.button if b.label == "Open my organizations").click().run()
    assert not at.exception
    assert at.title[0].value.startswith(ORG_A)


def test_downloads_of_own_org_only(demo, demo_period, capsys):
    """The invoice downloads exist for org A (with A's total) and not at all under a B link."""
    url, _ = demo
    closed = shift_period(demo_period, -1)
    capsys.readouterr()
    assert cli_main(["--database-url", url, "invoice", "--org", ORG_A, "--period", closed, "--json"]) == 0
    a_total = json.loads(capsys.readouterr().out)["total"]
    own = _app({"org": ORG_A, "period": closed}, "pages/invoice.py", "a@x")
    labels = [d.label for d in own.get("download_button")]
    assert labels == ["Line items (CSV)", "Invoice (JSON)"]
    assert f"${a_total:,.2f}" in _rendered(own)
    other = _app({"org": ORG_B, "period": closed}, "pages/invoice.py", "a@x")
    assert not other.get("download_button")


def test_viewer_sees_budgets_read_only(demo, demo_period):
    at = _app({"org": ORG_A}, "pages/forecast.py", "a@x")
    assert not at.exception
    assert not [t for t in at.text_input if t.key == "b_amount"]
    assert not [b for b in at.button if b.label in ("Save budget", "Delete")]
    assert any("Read-only" in c.value for c in at.caption)


def test_finance_creates_a_budget_only_in_own_org(demo, demo_period):
    _, eng = demo
    old = find_budget(eng, [ORG_A], ORG_A, "org", ORG_A)
    if old:
        delete_budget(eng, [ORG_A], old.id)
    at = _app({"org": ORG_A}, "pages/forecast.py", "f@x")
    assert not at.exception
    at.selectbox(key="b_scope").set_value("org")
    at.text_input(key="b_amount").input("1234.50")
    at.text_input(key="b_thresholds").input("50,90")
    next(b for b in at.button if b.label == "Save budget").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Budget saved" in s.value for s in at.success)
    made = find_budget(eng, [ORG_A], ORG_A, "org", ORG_A)
    assert made is not None and made.amount_cents == 123450 and tuple(made.thresholds) == (50, 90)
    delete_budget(eng, [ORG_A], made.id)
    # the write scope the page passes is the finance scope: org B is refused by the domain layer
    with pytest.raises(BudgetError, match="not one you can see"):
        create_budget(eng, [ORG_A], org=ORG_B, scope="org", scope_value=ORG_B, amount_cents=100)


def test_admin_grants_and_revokes_in_own_org(demo, demo_period):
    _, eng = demo
    revoke(eng, [ORG_A], "g@x", ORG_A)
    viewer = _app({"org": ORG_A}, "pages/access.py", "a@x")
    assert "Access" not in [t.value for t in viewer.title]  # not in a viewer's page list, refused if run
    assert not viewer.get("form") and not viewer.text_input

    at = _app({"org": ORG_A}, "pages/access.py", "ad@x")
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Access"
    assert at.selectbox(key="g_org").options == [ORG_A]  # no other org, no platform '*'
    at.text_input(key="g_user").input("G@X")
    at.selectbox(key="g_role").set_value("finance")
    next(b for b in at.button if b.label == "Grant").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert memberships_of(eng, "g@x") == {ORG_A: "finance"}

    rows = at.selectbox(key="r_pick")
    idx = next(i for i, o in enumerate(rows.options) if o.startswith("g@x"))
    rows.set_value(rows.options[idx])
    at.button(key="r_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert memberships_of(eng, "g@x") == {}
    assert any("Revoked g@x" in s.value for s in at.success)


def test_platform_only_sections(demo, demo_period):
    viewer = _app({"org": ORG_A}, "pages/data.py", "a@x")
    assert "Recent ingest runs" not in [s.value for s in viewer.subheader]
    assert "Rate card in force" in [s.value for s in viewer.subheader]
    local = _app({"org": ORG_A}, "pages/data.py", oidc=False, seam=LOCAL_USER)
    assert "Recent ingest runs" in [s.value for s in local.subheader]


def test_local_mode_shows_every_org_with_a_banner(demo, demo_period, monkeypatch):
    monkeypatch.setenv("METERING_AUTH", "local")
    at = _app({"org": ORG_B}, None, oidc=False)
    assert not at.exception
    assert any("Local demo mode: single user, every org" in i.value for i in at.sidebar.info)
    assert at.sidebar.selectbox(key="org").value == ORG_B
    assert len(at.sidebar.selectbox(key="org").options) == 6
    assert at.metric
    at.switch_page("pages/access.py").run()  # local user administers everything
    assert at.title[0].value == "Access"
    assert "* (platform: every org)" in at.selectbox(key="g_org").options


def test_user_without_membership_and_signed_out(demo, demo_period):
    nobody = _app({"org": ORG_A}, None, "n@x")
    assert any("no access to any organization" in w.value for w in nobody.warning)
    assert not nobody.metric and not nobody.sidebar.selectbox

    out = _app({"org": ORG_A}, None, None)  # OIDC configured, st.user not logged in
    assert [b.label for b in out.button] == ["Sign in"]
    assert not out.metric and not out.sidebar.selectbox


def test_session_seam_user_id_loads_memberships(demo, demo_period):
    at = _app({"org": ORG_B}, None, oidc=False, seam="a@x")
    assert at.title[0].value == "No access"
    at = _app({"org": ORG_A}, None, oidc=False, seam="a@x")
    assert at.sidebar.selectbox(key="org").options == [ORG_A]
    p = Principal("p", "P", "test", {ORG_B: Role.VIEWER})
    at = _app({}, None, oidc=False, seam=p)
    assert at.sidebar.selectbox(key="org").value == ORG_B


@pytest.mark.parametrize("env,expect", [
    ({"METERING_AUTH": "proxy"}, "Not signed in"),
    ({"METERING_AUTH": "oidc"}, "needs an [auth] section"),
    ({"METERING_AUTH": "ldap"}, "misconfigured"),
    ({"METERING_AUTH": "proxy", "METERING_PROXY_HEADER": "X-User\r\nX-Evil"}, "misconfigured"),
])
def test_modes_without_identity_show_no_data(demo, demo_period, monkeypatch, env, expect):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    at = _app({"org": ORG_A}, None, "a@x", oidc=False)  # AppTest sends no proxy header
    assert not at.exception
    assert any(expect in m.value for m in [*at.warning, *at.error])
    assert not at.metric and not at.sidebar.selectbox


@pytest.mark.parametrize("params,page", [
    ({"org": ORG_A, "period": "2026-01'; DELETE FROM memberships;--"}, None),
    ({"org": ORG_A, "project": list(B_PROJECTS)}, None),
    ({"org": ORG_A, "proj": "clinical-credentialing"}, "pages/projects.py"),
    ({"org": ORG_A, "dim": "org"}, "pages/lanes.py"),
    ({"org": ORG_A, "by": "\u0000" * 10 + "x" * 100_000}, "pages/invoice.py"),
    ({"org": ORG_A, "workload": [str(i) for i in range(500)]}, None),
])
def test_nasty_params_never_crash_or_leave_own_org(demo, demo_period, params, page):
    at = _app(params, page, "a@x")
    assert not at.exception, [e.value for e in at.exception]
    assert ORG_A in at.title[0].value
    # B's project names may only be echoed back, inertly, in the warning about refused link values
    warnings = {id(w) for w in at.warning}
    text = "\n".join(str(n.proto) for n in at._tree
                     if getattr(n, "proto", None) is not None and id(n) not in warnings)
    for leaked in [*B_PROJECTS, ORG_B]:
        assert leaked not in text
    if "project" in params:
        assert any("clinical-credentialing" in w.value for w in at.warning)


# -- pure functions: mode selection, header / claim parsing --------------------------------------

def test_auth_mode_selection():
    assert auth_mode({}, has_auth_secrets=False) == "local"
    assert auth_mode({}, has_auth_secrets=True) == "oidc"
    assert auth_mode({"METERING_AUTH": " Proxy "}, has_auth_secrets=True) == "proxy"
    assert auth_mode({"METERING_AUTH": "local"}, has_auth_secrets=True) == "local"
    with pytest.raises(AuthConfigError, match="not one of local, oidc, proxy"):
        auth_mode({"METERING_AUTH": "none"}, has_auth_secrets=False)
    assert proxy_header_name({}) == "X-Forwarded-Email"
    assert proxy_header_name({"METERING_PROXY_HEADER": "X-Auth-Request-Email"}) == "X-Auth-Request-Email"
    with pytest.raises(AuthConfigError):
        proxy_header_name({"METERING_PROXY_HEADER": "X-Email: a@x"})


def test_user_from_proxy_headers():
    h = "X-Forwarded-Email"
    assert user_from_headers(StreamlitHeaders([("x-forwarded-email", "A@X")]), h) == "a@x"
    assert user_from_headers(StreamlitHeaders([("Host", "app")]), h) is None
    assert user_from_headers(StreamlitHeaders([(h, "")]), h) is None
    assert user_from_headers(StreamlitHeaders([(h, "   ")]), h) is None
    assert user_from_headers(StreamlitHeaders([(h, "a@x\u0007")]), h) is None  # not printable
    assert user_from_headers(StreamlitHeaders([(h, "a" * 201)]), h) is None
    # two values: a client copy slipped past the proxy; refuse instead of picking one
    assert user_from_headers(StreamlitHeaders([(h, "evil@x"), (h, "a@x")]), h) is None
    assert user_from_headers({"x-forwarded-email": "b@x"}, h) == "b@x"


def test_user_from_oidc_claims():
    claims = {"is_logged_in": True, "email": "Ann@Example.com", "sub": "123"}
    assert user_from_oidc(claims) == "ann@example.com"
    assert user_from_oidc({"is_logged_in": True, "sub": "google-oauth2|123"}) == "google-oauth2|123"
    assert user_from_oidc({"is_logged_in": False, "email": "a@x"}) is None
    assert user_from_oidc({"email": "test@example.com"}) is None  # no login flag: not signed in
    assert user_from_oidc({"is_logged_in": True}) is None


# -- Hypothesis: the URL allow-lists ----------------------------------------------------------

ALLOWED = {
    "org": [ORG_A, "cobalt-lending"], "period": ["2026-11", "2026-10"], "vs": ["previous", "last-year"],
    "project": ["production-underwriting", "sandbox-workforce-review"], "env": ["sandbox", "production"],
    "workload": ["underwriting", "workforce-review"],
}
NASTY = ["'; DROP TABLE usage_daily;--", "<script>alert(1)</script>", "[x](javascript:alert(1))",
         "**bold**", ":material/lock:", "\u202e\u200b", "%00", "../../etc/passwd", ORG_B, "*",
         "ACME-INSURANCE", "acme-insurance ", "9" * 400, "\U0001f4a5" * 300]
values = hs.one_of(hs.sampled_from([v for vs in ALLOWED.values() for v in vs]), hs.sampled_from(NASTY),
                   hs.text(max_size=60), hs.text(min_size=190, max_size=2000))
raw_params = hs.dictionaries(hs.one_of(hs.sampled_from(list(FILTER_KEYS)), hs.text(max_size=12)),
                             hs.lists(values, max_size=80), max_size=10)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_params)
def test_validate_params_keeps_only_allowed_values(raw):
    clean, problems = validate_params(raw, ALLOWED)
    assert set(clean) == set(ALLOWED)
    refused_keys = 0
    for key, kept in clean.items():
        assert all(v in ALLOWED[key] for v in kept)  # nothing off the allow-list survives
        assert len(kept) == len(set(kept))
        if key in SINGLE_VALUED:
            assert len(kept) <= 1
        given_ = raw.get(key, [])
        expected = [v for v in dict.fromkeys(given_[:50]) if v in ALLOWED[key] and len(v) <= MAX_VALUE_LEN]
        assert kept == (expected[:1] if key in SINGLE_VALUED else expected)
        if any(v not in ALLOWED[key] for v in given_) or len(given_) > 50 or (
                key in SINGLE_VALUED and len(set(given_)) > 1):
            refused_keys += 1
    assert len(problems) == refused_keys
    for line in problems:  # inert display: no markdown link, no emoji shortcode, no control chars
        shown = line.split(" = ", 1)[1]
        assert "](" not in shown and ":" not in shown and "<" not in shown and "*" not in shown
        assert all(c.isprintable() for c in shown) and len(shown) < 200


@settings(max_examples=400, deadline=None)
@given(hs.lists(values, max_size=5), hs.lists(hs.sampled_from([ORG_A, "cobalt-lending", "delta-payroll"]),
                                               unique=True, max_size=3))
def test_resolve_org_never_leaves_the_visible_set(raw, visible):
    org = resolve_org(raw, visible)
    if org is not None:
        assert org in visible
        assert raw == [org] or (not raw and org == visible[0])
    else:
        assert raw or not visible


@settings(max_examples=300, deadline=None)
@given(hs.one_of(hs.text(max_size=80), hs.sampled_from(NASTY)))
def test_md_makes_data_inert(value):
    out = md(value)
    # reading it back: every escaped character is the original one, nothing unescaped is special
    plain, i = [], 0
    while i < len(out):
        if out[i] == "\\":
            assert out[i + 1] in MD_SPECIAL
            plain.append(out[i + 1])
            i += 2
        else:
            assert out[i] not in MD_SPECIAL and out[i] not in "\n\r"
            plain.append(out[i])
            i += 1
    assert "".join(plain) == " ".join(value.splitlines())


def _loader_script():
    import streamlit as st

    from metering.access import AccessDenied, Principal, Role
    from ui import data

    st.session_state["_principal"] = Principal("a@x", "a@x", "test", {"acme-insurance": Role.VIEWER})
    calls = {
        "org_options": lambda o: data.org_options(o),
        "freshness": lambda o: data.freshness(o),
        "api_keys": lambda o: data.api_keys(o),
        "org_usage": lambda o: data.org_usage(o, st.session_state["_start"], st.session_state["_end"]),
        "overview": lambda o: data.overview(o, st.session_state["_closed"], st.session_state["_prev"],
                                            st.session_state["_end"]),
        "budget_evaluations": lambda o: data.budget_evaluations(o, st.session_state["_end"]),
        "invoice_document": lambda o: data.invoice_document(o, st.session_state["_closed"], None),
        "ingest_runs": lambda o: data.ingest_runs(),
    }
    for name, call in calls.items():
        for org in ("acme-insurance", "borealis-health"):
            try:
                call(org)
                st.text(f"{name} {org} served")
            except AccessDenied:
                st.text(f"{name} {org} denied")


def test_loaders_refuse_orgs_outside_the_principal(demo, demo_period):
    """The per-org caches are shared by all sessions: each loader checks the principal first,
    even for a B request whose result another user already put in the cache."""
    from metering.periods import period_bounds

    closed = shift_period(demo_period, -1)
    at = AppTest.from_function(_loader_script, default_timeout=120)
    start, end = period_bounds(closed)
    at.session_state["_start"], at.session_state["_end"] = start, end
    at.session_state["_closed"], at.session_state["_prev"] = closed, shift_period(closed, -1)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    lines = [t.value for t in at.text]
    names = ["org_options", "freshness", "api_keys", "org_usage", "overview", "budget_evaluations",
             "invoice_document"]
    expected = [line for n in names for line in (f"{n} acme-insurance served", f"{n} borealis-health denied")]
    assert lines == expected + ["ingest_runs acme-insurance denied", "ingest_runs borealis-health denied"]
