"""Forecast & alerts: projection band, honest backtest, budgets editor, alert states, anomalies."""

import polars as pl
import streamlit as st

from metering.access import Role
from metering.budgets import (
    BudgetError,
    create_budget,
    delete_budget,
    list_budgets,
    parse_amount,
    update_budget,
)
from ui import charts, data
from ui.auth import principal
from ui.fmt import md, usd
from ui.state import current_filters, today


def _budget_editor(evals) -> None:
    """Create / edit / delete budgets: writes scoped to the orgs where the user has finance+."""
    opts = data.org_options(f.org)
    writable = principal().orgs_with(Role.FINANCE, data.visible_orgs(principal().scope()))
    with st.expander("Create or edit a budget", expanded=not evals):
        with st.form("budget_form", clear_on_submit=False):
            scope = st.selectbox("Scope", ["org", "project", "api_key"], key="b_scope")
            values = {"org": [f.org], "project": opts["project"], "api_key": opts["api_key"]}[scope]
            scope_value = st.selectbox("Scope value", values, key="b_value",
                                       help="For org scope this is the org itself.")
            amount = st.text_input("Monthly amount (USD)", "5000.00", key="b_amount")
            thresholds = st.text_input("Thresholds (% of amount)", "50,80,100", key="b_thresholds")
            name = st.text_input("Name (optional)", "", key="b_name")
            if st.form_submit_button("Save budget", type="primary"):
                eng = data.writer(writable)
                try:
                    existing = [b for b in list_budgets(eng, [f.org], f.org)
                                if b.scope == scope and b.scope_value == scope_value]
                    cents = parse_amount(amount)
                    if existing:
                        update_budget(eng, writable, existing[0].id, amount_cents=cents, thresholds=thresholds,
                                      name=name or None)
                    else:
                        create_budget(eng, writable, org=f.org, scope=scope, scope_value=scope_value,
                                      amount_cents=cents, thresholds=thresholds, name=name or None)
                    data.clear()
                    st.success("Budget saved.")
                except BudgetError as exc:
                    st.error(f"Not saved: {md(exc)}")
        budgets = [ev.budget for ev in evals]
        if budgets:
            victim = st.selectbox("Delete a budget", [b.id for b in budgets], key="b_delete",
                                  format_func=lambda i: next(f"{b.scope} {b.scope_value} · {usd(b.amount_cents)}"
                                                             for b in budgets if b.id == i))
            if st.button("Delete", key="b_delete_go"):
                delete_budget(data.writer(writable), writable, victim)
                data.clear()
                st.rerun()

f = current_filters()
st.title(f"Forecast & alerts · {f.org}")
ov = data.overview(f.org, f.period, f.compare_period, today())
p = ov.projection
fm = data.forecast_model(f.org, f.period, f.compare_period, today(), f.projects, f.environments, f.workloads)

if p is None:
    st.info(f"{f.period} is closed: its invoice is final. Pick the open period in the sidebar to see the projection.")
else:
    row = st.container(horizontal=True)
    row.metric("Month to date", usd(p.mtd_cents), border=True)
    row.metric("Projected total", usd(p.total_cents), border=True)
    row.metric("80% interval", f"{usd(p.low_cents)} – {usd(p.high_cents)}", border=True)
    row.metric("Days elapsed", f"{p.days_elapsed} of {p.days_in_period}", border=True)
    st.subheader("Cumulative spend: actual to date and projection")
    charts.show(fm.band_spec)
    st.caption("Whole org, usage lines (the minimum-commit true-up is added to the totals above, not the curve).")
    c1, c2 = st.columns(2, gap="large")
    with c1:
        st.subheader("Backtest accuracy")
        st.dataframe(fm.backtest, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.1f%%") for c in ("MAPE (chosen)", "MAPE (run-rate)", "Interval coverage")})
        st.caption("Projected invoice vs actual on earlier closed periods, cut at day 7/14/21. "
                   "The nominal interval is 80%; coverage is what was measured.")
    with c2:
        st.subheader("Method per series")
        st.dataframe(fm.series, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="localized") for c in ("Forecast qty", "Low", "High")})
    with st.expander("Forecast notes"):
        for n in p.notes:
            st.markdown(f"- {n}")

st.subheader("Budgets and threshold alerts")
evals = data.budget_evaluations(f.org, today())
if evals:
    rows = []
    for ev in evals:
        for t in ev.thresholds:
            rows.append({"Budget": ev.budget.name or f"{ev.budget.scope}: {ev.budget.scope_value}",
                         "Scope": f"{ev.budget.scope} {ev.budget.scope_value}",
                         "Threshold": f"{t.percent}% ({usd(t.threshold_cents)})",
                         "State": t.state, "On": t.on, "Actual": ev.actual_cents / 100,
                         "Projected": ev.projected_cents / 100})
    st.dataframe(pl.DataFrame(rows).to_arrow(), hide_index=True, width="stretch", column_config={
        "Actual": st.column_config.NumberColumn(format="dollar"),
        "Projected": st.column_config.NumberColumn(format="dollar")})
else:
    st.info("No budgets yet for this org: add one below.")

if principal().can(f.org, Role.FINANCE):
    _budget_editor(evals)
else:
    st.caption(":material/visibility: Read-only: creating, editing and deleting budgets needs the "
               f"finance or admin role in {f.org}.")

st.subheader("Spend anomalies")
if fm.anomalies is not None:
    st.dataframe(fm.anomalies, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="dollar") for c in ("Spend", "Baseline", "Impact")})
    st.caption("Daily spend against a rolling median + MAD baseline of the previous days in the period.")
else:
    st.success("No spend spikes in this period's lanes.")
