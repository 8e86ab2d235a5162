"""The app deployed least-privilege on PostgreSQL: reads through a metering_reader login with
row-level security on (METERING_READ_DATABASE_URL), edits through a metering_writer login.

Proves the wiring in ui/data.py: every read carries the signed-in user's org scope (the RLS
policies fail closed, so an unscoped read would show nothing), sign-in finds memberships across
orgs, the numbers equal the CLI's (owner connection), and a foreign link still shows No access.
"""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from metering.cli import main as cli_main
from metering.periods import shift_period
from queries.access import grant
from queries.engine import drop_database, make_engine, recreate_database
from queries.roles import drop_roles, setup_roles
from tests.conftest import PG_ADMIN_URL, ROOT
from tests.test_access_app import AUTH_SECRETS, ORG_A, ORG_B, _clear_caches, _rendered

APP = str(ROOT / "app.py")


@pytest.fixture(scope="module")
def rls_app_db():
    """A small PostgreSQL demo, RLS on, one reader and one writer login (all dropped afterwards)."""
    sfx = uuid.uuid4().hex[:8]
    name = f"metering_rls_app_{sfx}"
    owner_url = recreate_database(PG_ADMIN_URL, name)
    assert cli_main(["--database-url", owner_url, "init-db"]) == 0
    demo = ["demo", "--days", "70", "--events", "15000", "--seed", "5"]
    assert cli_main(["--database-url", owner_url, *demo]) == 0
    owner = make_engine(owner_url)
    roles = (f"mt_reader_{sfx}", f"mt_writer_{sfx}", f"mt_rlogin_{sfx}", f"mt_wlogin_{sfx}")
    setup_roles(owner, reader=roles[0], writer=roles[1], rls=True,
                reader_logins=(roles[2],), writer_logins=(roles[3],))
    grant(owner, [ORG_A], "a@x", ORG_A, "finance")
    as_login = {r: owner.url.set(username=r, password=None).render_as_string(hide_password=False)
                for r in roles[2:]}
    yield owner_url, as_login[roles[2]], as_login[roles[3]]
    owner.dispose()
    _clear_caches()  # pooled connections of the app's engines
    drop_database(PG_ADMIN_URL, name)
    cluster = make_engine(PG_ADMIN_URL)  # roles are cluster-wide: drop them from any database
    drop_roles(cluster, roles)
    cluster.dispose()


@pytest.fixture
def app_env(rls_app_db, monkeypatch):
    owner_url, reader_url, writer_url = rls_app_db
    monkeypatch.setenv("METERING_READ_DATABASE_URL", reader_url)
    monkeypatch.setenv("METERING_DATABASE_URL", writer_url)
    monkeypatch.setenv("METERING_AUTH", "oidc")
    _clear_caches()
    yield owner_url
    _clear_caches()


def _run(params: dict, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["auth"] = AUTH_SECRETS
    at.user = {"is_logged_in": True, "email": "a@x", "name": "a@x"}
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def test_reader_login_with_rls_serves_the_users_org_to_the_cent(app_env, demo_period, capsys):
    closed = shift_period(demo_period, -1)
    capsys.readouterr()
    assert cli_main(["--database-url", app_env, "invoice", "--org", ORG_A, "--period", closed, "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total > 0
    at = _run({"org": ORG_A, "period": closed}, "pages/invoice.py")
    assert not at.exception, [e.value for e in at.exception]
    assert f"${total:,.2f}" in _rendered(at)
    # the org list came through RLS with the user's scope: only org A is offered
    assert at.sidebar.selectbox(key="org").options == [ORG_A]


def test_reader_login_with_rls_still_refuses_a_foreign_link(app_env, demo_period):
    at = _run({"org": ORG_B, "period": shift_period(demo_period, -1)})
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "No access"
    assert "borealis" not in _rendered(at)


def test_unscoped_reader_sees_nothing(rls_app_db):
    """The fail-closed default the app relies on: without the scope, the reader login reads no usage."""
    _, reader_url, _ = rls_app_db
    eng = make_engine(reader_url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM usage_daily")).scalar_one() == 0
    eng.dispose()
    owner = make_engine(rls_app_db[0])
    with owner.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM usage_daily")).scalar_one() > 0
    owner.dispose()
