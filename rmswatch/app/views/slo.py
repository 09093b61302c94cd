"""SLO views: budget burn over the period from finished runs, and the per-window burn table."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from rmswatch.app.views.common import AMBER, BLUE, RED, empty_figure, figure


def retrain_budget_burn(runs: pd.DataFrame, objective: float) -> pd.DataFrame:
    """Cumulative error budget left after each finished run, in end-time order.

    Budget left = 1 - failures / (allowed failure ratio x finished runs so far).
    """
    columns = ["time", "run_id", "ok", "budget_left"]
    finished = runs[runs["status"] != "running"] if not runs.empty else runs
    if finished.empty:
        return pd.DataFrame(columns=columns)
    ordered = finished.assign(time=finished["ended_at"].fillna(finished["started_at"]))
    ordered = ordered.sort_values("time")
    ok = ordered["status"] == "succeeded"
    failures = (~ok).cumsum()
    total = pd.Series(range(1, len(ordered) + 1), index=ordered.index)
    allowed = (1.0 - objective) * total
    left = 1.0 - failures / allowed.where(allowed > 0)
    return pd.DataFrame(
        {"time": ordered["time"], "run_id": ordered["run_id"], "ok": ok, "budget_left": left}
    ).reset_index(drop=True)


def budget_burn_figure(burn: pd.DataFrame, name: str) -> go.Figure:
    title = f"Error budget left — {name}"
    if burn.empty:
        return empty_figure(title, "no finished runs yet — the budget starts at 100%")
    fig = figure(title, height=300)
    fig.add_scatter(
        x=burn["time"],
        y=burn["budget_left"] * 100,
        mode="lines+markers",
        line={"color": BLUE, "width": 3},
        name="budget left",
        text=burn["run_id"],
        hovertemplate="%{text}<br>%{y:.1f}%<extra></extra>",
    )
    failed = burn[~burn["ok"]]
    fig.add_scatter(
        x=failed["time"],
        y=failed["budget_left"] * 100,
        mode="markers",
        marker={"color": RED, "size": 11, "symbol": "x"},
        name="failed run",
    )
    fig.add_hline(y=0, line_color=AMBER, line_dash="dash", annotation_text="budget exhausted")
    fig.update_yaxes(ticksuffix="%")
    return fig


def burn_rate_figure(rates: pd.DataFrame) -> go.Figure:
    """Burn rate per window (bars) with the page/ticket thresholds of the SRE workbook."""
    title = "Burn rate per window"
    if rates.empty:
        return empty_figure(title, "no burn rates yet — configure slos: in the config file")
    fig = figure(title, height=280)
    fig.add_bar(x=rates["window"], y=rates["burn_rate"], marker_color=BLUE, name="burn rate")
    for level, color in ((14.4, RED), (6.0, RED), (1.0, AMBER)):
        fig.add_hline(y=level, line_dash="dot", line_color=color, annotation_text=f"{level}x")
    return fig
