"""The shared sidebar filters, bound to the URL so a copied link reopens the same view.

Every filter is a widget with ``bind="query-params"``. Before the widgets render, the raw
query parameters are checked against the allowed values; anything unknown or malformed is
named in a warning and falls back to the default (Streamlit drops it from the URL).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import streamlit as st

from metering.domain import ENVIRONMENTS
from metering.periods import period_of, shift_period
from ui import data

COMPARE_OPTIONS = {"previous": "Previous month", "last-year": "Same month last year"}
FILTER_KEYS = ("org", "period", "vs", "project", "env", "workload")


@dataclass(frozen=True)
class Filters:
    org: str
    period: str
    compare: str  # "previous" | "last-year"
    projects: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ()
    periods: tuple[str, ...] = field(default=(), compare=False)

    @property
    def compare_period(self) -> str:
        return shift_period(self.period, -1 if self.compare == "previous" else -12)

    def as_dict(self) -> dict[str, str | list[str]]:
        return {
            "org": self.org, "period": self.period, "vs": self.compare,
            "project": list(self.projects), "env": list(self.environments),
            "workload": list(self.workloads),
        }

    def slice(self) -> dict[str, tuple[str, ...]]:
        """Column filters for metering functions (empty = all)."""
        return {"project": self.projects, "environment": self.environments, "workload": self.workloads}


def _periods_between(first: date | None, today: date) -> list[str]:
    """Periods from the first day with data to the open period, newest first."""
    last = period_of(today)
    if first is None:
        return [last]
    out, p = [], last
    start = period_of(first)
    while p >= start and len(out) < 60:
        out.append(p)
        p = shift_period(p, -1)
    return out


MAX_VALUE_LEN = 200  # longer than any org, project, workload or period: refused unread
MAX_VALUES = 50  # per key; a link with more values than that is not one the app wrote
SINGLE_VALUED = frozenset({"org", "period", "vs"})


def validate_params(raw: Mapping[str, Sequence[str]],
                    allowed: Mapping[str, Collection[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """Check raw query params against allow-lists (pure: no Streamlit, fuzzed by the tests).

    Returns ``clean`` (for each allowed key, the values that are on its allow-list, in order,
    without repeats; single-valued keys keep at most one) and ``problems`` (one markdown-safe
    line per key with refused values). Keys that are not in ``allowed`` are ignored."""
    clean: dict[str, list[str]] = {}
    problems: list[str] = []
    for key, options in allowed.items():
        values = list(raw.get(key, ()) or ())
        ok: list[str] = []
        bad: list[str] = []
        for i, v in enumerate(values):
            if i >= MAX_VALUES:
                bad.append(f"... {len(values) - MAX_VALUES} more values")
                break
            if not isinstance(v, str) or len(v) > MAX_VALUE_LEN or v not in options:
                bad.append(v if isinstance(v, str) else repr(v))
            elif v not in ok:
                if key in SINGLE_VALUED and ok:
                    bad.append(v)
                else:
                    ok.append(v)
        clean[key] = ok
        if bad:
            problems.append(f"**{key}** = " + ", ".join(_shown(v) for v in bad[:3])
                            + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""))
    return clean, problems


def _shown(value: str) -> str:
    """A refused value as safe display text: at most 40 characters, only letters, digits and
    ``-_.@ `` (anything else becomes ``?``), so a link cannot inject markdown, links or emoji."""
    short = value[:40]
    safe = "".join(c if (c.isalnum() and c.isprintable()) or c in "-_.@ " else "?" for c in short)
    return "'" + safe + ("…" if len(value) > 40 else "") + "'"


def resolve_org(raw: Sequence[str], visible: Sequence[str]) -> str | None:
    """The org a link asks for, if the user may see it: no ``org`` param = the first visible
    org; one value on the visible list = that org; anything else (foreign, unknown, repeated,
    malformed) = None, which the app answers with "No access" and no data at all."""
    values = list(raw or ())
    if not values:
        return visible[0] if visible else None
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    return values[0] if values[0] in set(visible) else None


def requested_org(orgs: list[str]) -> str | None:
    """The org of this run: the one chosen in the sidebar this session, else the link's (see
    ``resolve_org``); None when the link names an org outside ``orgs``."""
    org = resolve_org(st.query_params.get_all("org"), orgs)
    if org is None:
        return None
    current = st.session_state.get("org")
    return current if current in orgs else org


def no_access() -> None:
    """The answer to a link naming an org outside the user's set; stops the run before anything
    of any org renders. Unknown and foreign orgs get the same answer, so a link does not reveal
    whether an org exists."""
    st.title("No access")
    st.error("No access: this link points to an organization that you are not a member of, or "
             "that does not exist. Nothing from it is shown.", icon=":material/block:")
    if st.button("Open my organizations", icon=":material/home:"):
        st.query_params.clear()
        st.rerun()
    st.stop()


def _warn_bad_params(allowed: dict[str, list[str]]) -> None:
    raw = {key: st.query_params.get_all(key) for key in allowed}
    _clean, problems = validate_params(raw, allowed)
    if problems:
        st.warning(
            "This link has values that are unknown or not visible to you, so they were ignored "
            "and the default is shown instead: " + "; ".join(problems),
            icon=":material/link_off:",
        )


def sidebar_filters(orgs: list[str], today: date) -> Filters | None:
    """Render the shared filters (sidebar) and return them; None when there is no org to show."""
    if not orgs:
        return None
    raw_org = st.query_params.get("org")
    org_guess = raw_org if raw_org in orgs else orgs[0]
    opts = data.org_options(org_guess)
    periods = _periods_between(opts["first_day"], today)
    _warn_bad_params({
        "org": orgs, "period": periods, "vs": list(COMPARE_OPTIONS),
        "project": opts["project"], "env": list(ENVIRONMENTS), "workload": opts["workload"],
    })
    sb = st.sidebar
    # org and period have no widget default (index=None) and are seeded through session state, so
    # they are always written to the URL: a shared link never drifts to another org or month.
    _seed("org", orgs, org_guess)
    org = sb.selectbox("Organization", orgs, key="org", bind="query-params", index=None) or org_guess
    if org != org_guess:  # chosen in the widget this run: options follow the org
        opts = data.org_options(org)
        periods = _periods_between(opts["first_day"], today)
    _seed("period", periods, periods[0])
    period = sb.selectbox(
        "Billing period", periods, key="period", bind="query-params", index=None,
        help="UTC calendar month. The newest is the open period (month to date).",
    ) or periods[0]
    compare = sb.segmented_control(
        "Compare with", list(COMPARE_OPTIONS), key="vs", default="previous", bind="query-params",
        required=True, help="previous: the month before; last-year: the same month a year earlier.",
    ) or "previous"
    projects = sb.multiselect("Projects", opts["project"], key="project", bind="query-params",
                              placeholder="All projects")
    envs = sb.multiselect("Environments", list(ENVIRONMENTS), key="env", bind="query-params",
                          placeholder="All environments")
    workloads = sb.multiselect("Workloads", opts["workload"], key="workload", bind="query-params",
                               placeholder="All workloads")
    f = Filters(org, period, compare, tuple(projects), tuple(envs), tuple(workloads), tuple(periods))
    return f


def _seed(key: str, options: list[str], default: str) -> None:
    """Give a bound widget without default a valid value: the URL's if valid, else ``default``."""
    current = st.session_state.get(key)
    if current in options:
        return
    raw = st.query_params.get(key)
    st.session_state[key] = raw if raw in options else default


def current_filters() -> Filters:
    """The filters the frame resolved for this run (the frame runs first if app.py did not)."""
    from ui.frame import page_filters

    return page_filters()


def today() -> date:
    from metering.periods import utcnow

    return utcnow().date()
