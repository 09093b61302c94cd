"""The look every page shares: a dark, high-contrast theme and figures that explain emptiness."""

from __future__ import annotations

import html
import math
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import plotly.graph_objects as go

BACKGROUND = "#0d1117"
PANEL = "#161b22"
TEXT = "#f0f6fc"
MUTED = "#9da7b3"
GRID = "#30363d"
RED = "#ff6b6b"
AMBER = "#f2cc60"
GREEN = "#56d364"
BLUE = "#58a6ff"
PURPLE = "#d2a8ff"
SERIES = (BLUE, AMBER, GREEN, PURPLE, "#ff9bce", "#79c0ff", "#ffa657")

NO_RUNS = "no runs yet — start a training with rmswatch.watch(optimizer, store=...)"


def figure(title: str, *, height: int = 300) -> go.Figure:
    """An empty figure in the house style."""
    fig = go.Figure()
    fig.update_layout(
        title={"text": html.escape(title), "font": {"size": 15, "color": TEXT}, "x": 0.01},
        paper_bgcolor=PANEL,
        plot_bgcolor=PANEL,
        font={"color": TEXT, "size": 12},
        height=height,
        margin={"l": 56, "r": 16, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.2, "bgcolor": "rgba(0,0,0,0)"},
        hoverlabel={"namelength": -1},
    )
    fig.update_xaxes(gridcolor=GRID, zerolinecolor=GRID)
    fig.update_yaxes(gridcolor=GRID, zerolinecolor=GRID)
    return fig


def empty_figure(title: str, message: str, *, height: int = 300) -> go.Figure:
    """A figure that says what to do instead of showing blank axes."""
    fig = figure(title, height=height)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=html.escape(message),
        showarrow=False,
        font={"size": 14, "color": MUTED},
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
    )
    return fig


def format_age(seconds: float | None) -> str:
    """`42s`, `5m 3s`, `2h 10m`, `3d 4h`; `never` for None."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "never"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"
    return f"{int(seconds // 86400)}d {int(seconds % 86400 // 3600)}h"


def format_percent(ratio: float | None, digits: int = 1) -> str:
    if ratio is None or math.isnan(ratio):
        return "—"
    return f"{ratio * 100:.{digits}f}%"


def format_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Inf" if number > 0 else "-Inf"
    return f"{number:.{digits}g}"


def format_duration(delta: timedelta | None) -> str:
    return "—" if delta is None else format_age(delta.total_seconds())


def format_time(moment: Any) -> str:
    """A pandas/py datetime as `2026-11-26 12:08:44 UTC`; `—` when missing."""
    if moment is None or pd.isna(moment):
        return "—"
    return iso(pd.Timestamp(moment).to_pydatetime())


def iso(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")
