"""SLO views over the alerting engine's own numbers (`Evaluator.slo_table`, `period_counts`):
the summary per SLO and series, burn rate per window, the budget-burn chart, the alerts raised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.alerting.slo import SloWindows, budget_remaining
from rmswatch.alerting.spec import SloSpec, format_duration
from rmswatch.app.views.common import (
    AMBER,
    BLUE,
    MUTED,
    RED,
    SERIES,
    empty_figure,
    figure,
    format_age,
    format_percent,
    label,
    log_axis,
    symlog,
)

SUMMARY_COLUMNS = [
    "slo",
    "series",
    "objective",
    "events",
    "bad",
    "budget_left",
    "burn_now",
    "exhausted_in",
    "alerting",
]

SUMMARY_HEADERS = {
    "series": "job",
    "budget_left": "budget left",
    "burn_now": "burn rate now",
    "exhausted_in": "budget lasts",
    "alerting": "alerting",
}


def burn_text(burn: float) -> str:
    """`133x`; `no events` where the window held none (not `NaNx`)."""
    return "no events" if burn is None or math.isnan(burn) else f"{burn:.3g}x"


def format_exhaustion(seconds: float) -> str:
    """`not burning`, `spent`, or how long the budget lasts at the current burn rate."""
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "not burning"
    if seconds <= 0:
        return "spent"
    return format_age(seconds)


def fastest_window(windows: SloWindows) -> str:
    """The label of the long window of the fastest (first) pair: the burn rate shown as 'now'."""
    return format_duration(windows.windows[0].long) if windows.windows else ""


def slo_summary(table: pd.DataFrame, windows: Mapping[str, SloWindows]) -> pd.DataFrame:
    """One row per (SLO, series): alerting first, then least budget left."""
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []
    for row in table.to_dict("records"):
        fast = fastest_window(windows[row["slo"]])
        burn = row.get(f"burn_rate_{fast}", math.nan)
        alerting = "page" if row["firing_page"] else "ticket" if row["firing_ticket"] else "—"
        rows.append(
            {
                "slo": row["slo"],
                "series": row["key"],
                "objective": f"{row['objective']:g}%",
                "events": int(row["events_period"]),
                "bad": int(row["bad_period"]),
                "budget_left": float(row["budget_remaining"]),
                "burn_now": float(burn) if burn is not None else math.nan,
                "exhausted_in": format_exhaustion(float(row["time_to_exhaustion_seconds"])),
                "alerting": alerting,
            }
        )
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    rank = frame["alerting"].map({"page": 0, "ticket": 1}).fillna(2)
    order = frame.assign(_rank=rank).sort_values(["_rank", "budget_left", "slo", "series"])
    return frame.loc[order.index].reset_index(drop=True)


def window_burns(table: pd.DataFrame, slo: str, series: str, windows: SloWindows) -> pd.DataFrame:
    """Burn rate of every alert window of one SLO series, paired as the alert judges them."""
    columns = ["pair", "severity", "factor", "leg", "window", "burn_rate", "events"]
    match = table[(table["slo"] == slo) & (table["key"] == series)] if not table.empty else table
    if match.empty:
        return pd.DataFrame(columns=columns)
    row = match.iloc[0]
    rows = []
    for window in windows.windows:
        long_name, short_name = format_duration(window.long), format_duration(window.short)
        for leg, name in (("long", long_name), ("short", short_name)):
            rows.append(
                {
                    "pair": f"{long_name} / {short_name}",
                    "severity": window.severity,
                    "factor": window.factor,
                    "leg": leg,
                    "window": name,
                    "burn_rate": float(row[f"burn_rate_{name}"]),
                    "events": float(row[f"events_{name}"]),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def burn_rate_figure(burns: pd.DataFrame, title: str = "Burn rate per window") -> go.Figure:
    """Long and short window of each alert pair side by side, with the pair's threshold."""
    if burns.empty:
        return empty_figure(title, "no SLO series yet — burn rates appear once runs report")
    fig = figure(title, height=300)
    for leg, color in (("long", BLUE), ("short", MUTED)):
        part = burns[burns["leg"] == leg]
        fig.add_bar(
            x=part["pair"],
            y=part["burn_rate"].fillna(0.0),
            name=f"{leg} window",
            marker_color=color,
            text=[
                f"{w}: {b:.3g}x" if not math.isnan(b) else f"{w}: no events"
                for w, b in zip(part["window"], part["burn_rate"], strict=True)
            ],  # fmt: skip
            textposition="outside",
            hovertemplate="%{text}<extra></extra>",
        )
    pairs = burns.drop_duplicates("pair")
    fig.add_scatter(
        x=pairs["pair"],
        y=pairs["factor"],
        mode="markers",
        name="alert threshold",
        marker={"symbol": "line-ew-open", "size": 40, "color": RED, "line": {"width": 3}},
        text=[f"{s} above {f:g}x" for s, f in zip(pairs["severity"], pairs["factor"], strict=True)],
        hovertemplate="%{text}<extra></extra>",
    )
    top = float(np.nanmax([burns["burn_rate"].max(), burns["factor"].max(), 1.0]))
    fig.update_layout(barmode="group")
    if top > 50:
        # whole decades only: plotly's own log ticks here read "5 2 100 5 2 10"
        values = pd.concat([burns["burn_rate"], burns["factor"], pd.Series([1.0])])
        fig.update_yaxes(**log_axis(values, ticks=5, title_text="× budget rate"))
    else:
        fig.update_yaxes(title_text="× budget rate", type="linear")
    return fig


def budget_burn(
    counts: pd.DataFrame, spec: SloSpec, now: float, series: str | None = None
) -> pd.DataFrame:
    """Error budget left through the period, per series: each point counts the period's events
    up to the end of its bucket (the same budget formula the alerts use)."""
    columns = ["series", "time", "budget_left", "bad", "total"]
    mine = counts[counts["slo"] == spec.name] if not counts.empty else counts
    if series is not None and not mine.empty:
        mine = mine[mine["key"] == series]
    if mine.empty:
        return pd.DataFrame(columns=columns)
    parts = []
    for key, group in mine.sort_values("start").groupby("key", sort=True):
        bad = (group["total"] - group["good"]).cumsum().to_numpy(dtype=float)
        total = group["total"].cumsum().to_numpy(dtype=float)
        ends = np.minimum(group["end"].to_numpy(dtype=float), now)
        start = float(group["start"].iloc[0])
        parts.append(
            pd.DataFrame(
                {
                    "series": key,
                    "time": pd.to_datetime(np.concatenate([[start], ends]), unit="s", utc=True),
                    "budget_left": np.concatenate(
                        [[1.0], budget_remaining(bad, total, spec.error_budget)]
                    ),
                    "bad": np.concatenate([[0.0], bad]),
                    "total": np.concatenate([[0.0], total]),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[columns]


def budget_burn_figure(burn: pd.DataFrame, spec: SloSpec) -> go.Figure:
    period = format_duration(spec.period)
    title = f"Error budget left over the {period} period — {spec.name} ({spec.objective:g}%)"
    if burn.empty:
        return empty_figure(title, "no events in this period yet — the budget starts at 100%")
    fig = figure(title, height=320)
    # an overspent budget can be -13000%: a symmetric log axis (linear within ±100%) shows it
    # where it is instead of clipping it at -100% while the card says -244%
    for index, (series, group) in enumerate(burn.groupby("series", sort=True)):
        percent = group["budget_left"].to_numpy(dtype=float) * 100
        fig.add_scatter(
            x=group["time"],
            y=symlog(percent, BUDGET_LINEAR_PERCENT),
            mode="lines+markers",
            line={"color": SERIES[index % len(SERIES)], "width": 3, "shape": "hv"},
            name=label(series),
            customdata=np.stack([percent, group["bad"], group["total"]], axis=1),
            hovertemplate="%{customdata[0]:.1f}% left<br>%{customdata[1]:.0f} bad of "
            "%{customdata[2]:.0f}<extra>%{fullData.name}</extra>",
        )
    lowest = float(np.nanmin(burn["budget_left"].to_numpy(dtype=float))) * 100
    ticks, texts = _budget_ticks(lowest)
    bottom = min(float(symlog(lowest, BUDGET_LINEAR_PERCENT)), -0.1) - 0.1
    fig.add_hline(y=0, line_color=AMBER, line_dash="dash", annotation_text="budget spent")
    fig.add_hrect(y0=bottom, y1=0, fillcolor=RED, opacity=0.08, line_width=0)
    fig.update_yaxes(tickvals=ticks, ticktext=texts, range=[bottom, 1.08])
    return fig


BUDGET_LINEAR_PERCENT = 100.0


def _budget_ticks(lowest_percent: float) -> tuple[list[float], list[str]]:
    """100%, 50%, 0% and, below zero, -50%, -100% then one tick per decade of overspend."""
    percents = [100.0, 50.0, 0.0]
    if lowest_percent < 0:
        percents += [-50.0, -100.0]
        decade = 1000.0
        while -decade / 10 > lowest_percent * 1.0001 and decade < 1e12:
            percents.append(-decade)
            decade *= 10
    return (
        [float(symlog(p, BUDGET_LINEAR_PERCENT)) for p in percents],
        [f"{p:g}%" for p in percents],
    )


def budget_tone(left: float) -> str:
    return "good" if left > 0.25 else "warn" if left > 0 else "bad"


def budget_text(left: float) -> str:
    """`62.0%`; an overspent budget reads as how many budgets were spent, not `-13233%`."""
    if math.isnan(left):
        return "—"
    if left < 0:
        return f"spent ({1 - left:.3g}× budget)"
    return format_percent(left)


def alerts_for_slo(alerts: pd.DataFrame, slo: str) -> pd.DataFrame:
    """The alerts whose `slo` label names this SLO (both wall-clock and step-window burns)."""
    if alerts.empty:
        return alerts
    named = alerts["labels"].map(lambda labels: isinstance(labels, dict) and labels.get("slo"))
    return alerts[named == slo].reset_index(drop=True)
