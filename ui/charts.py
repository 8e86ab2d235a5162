"""Altair chart builders. Every chart gets an already aggregated frame (a few hundred rows).

Pages do not hand Altair charts to Streamlit on every rerun: converting a chart to Vega-Lite
(``to_dict`` with jsonschema validation) costs 5-15 ms a chart. ``spec(chart)`` converts once,
when a cached page model is built (ui/data.py), into the same Vega-Lite dict ``st.altair_chart``
would send (datasets as Arrow bytes, Streamlit theme); ``show(spec)`` renders it with
``st.vega_lite_chart`` on a deep copy, so the cached spec is never mutated.
"""

from __future__ import annotations

import copy

import altair as alt
import polars as pl
import streamlit as st

from metering.domain import METERS

METER_SCALE = alt.Scale(
    domain=[m.label for m in METERS.values()] + ["Minimum commitment"],
    range=[m.color for m in METERS.values()] + ["#9D9D9D"],
)


def spec(chart: alt.TopLevelMixin) -> dict:
    """The Vega-Lite dict of an Altair chart, exactly as ``st.altair_chart`` builds it."""
    try:  # Streamlit's own converter: theme "none" under its lock, data as Arrow IPC bytes
        from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec
    except ImportError:  # pragma: no cover - a Streamlit without it: Altair's own (inline JSON data)
        return chart.to_dict()
    return _convert_altair_to_vega_lite_spec(chart)


def show(vega_lite: dict, container=None) -> None:
    """Render a cached spec (a copy: Streamlit patches some keys of the dict it is given)."""
    (container or st).vega_lite_chart(copy.deepcopy(vega_lite), width="stretch")


def meter_label(meter: str) -> str:
    if meter in METERS:
        return METERS[meter].label
    return "Minimum commitment" if meter == "minimum_commit_true_up" else meter


def _usd(frame: pl.DataFrame, cents: str = "amount_cents", out: str = "usd") -> pl.DataFrame:
    # display edge: cents -> float dollars for the chart only
    return frame.with_columns((pl.col(cents).cast(pl.Float64) / 100).alias(out))


def daily_spend_by_meter(daily: pl.DataFrame) -> alt.Chart:
    """Stacked bars: day x spend, coloured by meter (consistent colours on every page)."""
    df = _usd(daily).with_columns(pl.col("meter").map_elements(meter_label, return_dtype=pl.String).alias("Meter"))
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d")),
            y=alt.Y("sum(usd):Q", title="Spend (USD)", axis=alt.Axis(format="$,.0f")),
            color=alt.Color("Meter:N", scale=METER_SCALE, legend=alt.Legend(orient="bottom", title=None)),
            tooltip=[alt.Tooltip("day:T", title="Day"), "Meter:N",
                     alt.Tooltip("sum(usd):Q", title="Spend", format="$,.2f")],
        )
        .properties(height=260)
    )


def share_bars(frame: pl.DataFrame, dimension: str, title: str) -> alt.Chart:
    """Horizontal bars of spend per part with its share label."""
    df = _usd(frame).with_columns((pl.col("share") * 100).round(1).alias("pct"))
    base = alt.Chart(df).encode(
        y=alt.Y(f"{dimension}:N", sort="-x", title=None),
        x=alt.X("usd:Q", title="Spend (USD)", axis=alt.Axis(format="$,.0f")),
        tooltip=[alt.Tooltip(f"{dimension}:N", title=title), alt.Tooltip("usd:Q", title="Spend", format="$,.2f"),
                 alt.Tooltip("pct:Q", title="Share %")],
    )
    return (base.mark_bar(color="#4C78A8") + base.mark_text(align="left", dx=3).encode(
        text=alt.Text("pct:Q", format=".1f"))).properties(height=max(80, 28 * df.height))


def waterfall(lanes: pl.DataFrame, dimension: str, previous_cents: int, current_cents: int) -> alt.Chart:
    """Contribution of each lane to the change, from the previous total to the current one."""
    rows = [("Previous", 0, previous_cents, previous_cents, "total")]
    running = previous_cents
    for lane, delta in lanes.select(dimension, "contribution_cents").iter_rows():
        rows.append((str(lane), running, running + delta, delta, "up" if delta >= 0 else "down"))
        running += delta
    rows.append(("Current", 0, current_cents, current_cents, "total"))
    df = pl.DataFrame(rows, schema=["step", "start", "end", "delta", "kind"], orient="row").with_columns(
        (pl.col("start") / 100).alias("start_usd"), (pl.col("end") / 100).alias("end_usd"),
        (pl.col("delta") / 100).alias("delta_usd"), pl.int_range(pl.len()).alias("order"),
    )
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("step:N", sort=alt.EncodingSortField("order"), title=None, axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("start_usd:Q", title="Spend (USD)", axis=alt.Axis(format="$,.0f"), scale=alt.Scale(zero=False)),
            y2="end_usd:Q",
            color=alt.Color("kind:N", scale=alt.Scale(domain=["total", "up", "down"],
                                                      range=["#6C757D", "#E45756", "#54A24B"]), legend=None),
            tooltip=[alt.Tooltip("step:N", title="Lane"), alt.Tooltip("delta_usd:Q", title="Change", format="$,.2f")],
        )
        .properties(height=300)
    )


def forecast_band(daily: pl.DataFrame) -> alt.Chart:
    """Cumulative actual spend to date, then the projection with its 80% band."""
    df = daily.with_columns(
        *[(pl.col(c).cast(pl.Float64) / 100).alias(c.replace("_cents", "_usd"))
          for c in ("actual_cents", "projected_cents", "low_cents", "high_cents")]
    )
    base = alt.Chart(df).encode(x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d")))
    band = base.mark_area(opacity=0.25, color="#F58518").encode(
        y=alt.Y("low_usd:Q", title="Cumulative spend (USD)", axis=alt.Axis(format="$,.0f")), y2="high_usd:Q")
    proj = base.mark_line(strokeDash=[5, 4], color="#F58518").encode(y="projected_usd:Q")
    actual = base.mark_line(color="#4C78A8", strokeWidth=3).encode(
        y="actual_usd:Q",
        tooltip=[alt.Tooltip("day:T"), alt.Tooltip("actual_usd:Q", title="Actual", format="$,.2f"),
                 alt.Tooltip("projected_usd:Q", title="Projected", format="$,.2f"),
                 alt.Tooltip("low_usd:Q", title="Low", format="$,.2f"),
                 alt.Tooltip("high_usd:Q", title="High", format="$,.2f")],
    )
    return (band + proj + actual).properties(height=300)


def trend_line(frame: pl.DataFrame, x: str, y: str, title: str, fmt: str = "$,.2f") -> alt.Chart:
    return (
        alt.Chart(frame).mark_line(point=True)
        .encode(x=alt.X(f"{x}:T", title=None), y=alt.Y(f"{y}:Q", title=title, axis=alt.Axis(format=fmt)),
                tooltip=[alt.Tooltip(f"{x}:T"), alt.Tooltip(f"{y}:Q", format=fmt)])
        .properties(height=220)
    )
