"""The look every page shares: a dark, high-contrast theme and figures that explain emptiness."""

from __future__ import annotations

import html
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

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


def label(text: Any) -> str:
    """Text from a training job (a layer, job or group name) made safe for plotly, which renders
    `<b>`, `<a href>` and `<br>` in titles, legends, hover text and axis labels: shown as typed."""
    return html.escape(str(text), quote=False)


# log axes: at most about this many labelled decades, written 10⁵ (not 1e+05 or "100k")
LOG_TICKS = 7


def log_axis(values: Any, ticks: int = LOG_TICKS, **extra: Any) -> dict[str, Any]:
    """Layout of a log axis over `values` whose tick labels stay readable at any span (at most
    about `ticks` labelled decades)."""
    numeric = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    positive = numeric[np.isfinite(numeric) & (numeric > 0)]
    decades = float(np.log10(positive.max() / positive.min())) if positive.size else 0.0
    return {
        "type": "log",
        "dtick": max(1, math.ceil(decades / ticks)),
        "exponentformat": "power",
        "showexponent": "all",
        **extra,
    }


def spans_decades(values: Any, decades: float = 3.0) -> bool:
    """True when the positive finite values span more than `decades` powers of ten."""
    numeric = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    positive = numeric[np.isfinite(numeric) & (numeric > 0)]
    return bool(positive.size and np.log10(positive.max() / positive.min()) > decades)


def special_points(x: Any, values: Any, *, log: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The points an axis can't draw, placed where they are seen: (zeros, non-finite).

    A log axis has no zero, and no axis has NaN or ±Inf, so a curve silently breaks there and
    reads like missing data. Zeros (on a log axis) go at the bottom of the finite range, NaN/Inf at
    the top; each frame is (x, y, value) with `value` the real number, for the hover text.
    """
    numeric = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    steps = np.asarray(pd.Series(x))
    finite = np.isfinite(numeric)
    drawable = finite & (numeric > 0) if log else finite
    shown = numeric[drawable]
    if shown.size:
        top = shown.max() * 3.0 if log else shown.max() + 0.05 * (np.ptp(shown) or 1.0)
        bottom = shown.min() / 3.0 if log else 0.0
    else:
        top, bottom = (1.0, 0.1) if log else (1.0, 0.0)
    zero_mask = (numeric == 0) & log
    bad_mask = ~finite & ~pd.isna(pd.Series(values)).to_numpy()
    zeros = pd.DataFrame({"x": steps[zero_mask], "y": bottom, "value": numeric[zero_mask]})
    bad = pd.DataFrame({"x": steps[bad_mask], "y": top, "value": numeric[bad_mask]})
    return zeros, bad


def add_special_markers(
    fig: go.Figure, x: Any, values: Any, *, log: bool, what: str, row: int | None = None
) -> None:
    """Zero and NaN/Inf values of `values` as visible markers (see `special_points`)."""
    zeros, bad = special_points(x, values, log=log)
    where: dict[str, Any] = {"row": row, "col": 1} if row is not None else {}
    if not zeros.empty:
        fig.add_scatter(
            x=zeros["x"], y=zeros["y"], mode="markers", name=f"{what} = 0",
            marker={"color": MUTED, "symbol": "triangle-down", "size": 9},
            hovertemplate=f"step %{{x}}: {label(what)} = 0 (drawn at the bottom)<extra></extra>",
            **where,
        )  # fmt: skip
    if not bad.empty:
        fig.add_scatter(
            x=bad["x"], y=bad["y"], mode="markers", name=f"{what} NaN/Inf",
            marker={"color": RED, "symbol": "x", "size": 10},
            text=[format_number(v) for v in bad["value"]],
            hovertemplate=f"step %{{x}}: {label(what)} = %{{text}} (drawn at the top)"
            "<extra></extra>",
            **where,
        )  # fmt: skip


def symlog(values: Any, linthresh: float) -> np.ndarray:
    """A symmetric log scale: linear within ±`linthresh` (mapped to ±1), one unit per decade
    beyond it, so 0.5 and -3e29 share an axis and keep their sign and order."""
    numeric = np.asarray(values, dtype=float)
    magnitude = np.abs(numeric) / linthresh
    with np.errstate(divide="ignore", invalid="ignore"):
        outside = 1.0 + np.log10(np.where(magnitude > 1, magnitude, 1.0))
    scaled: np.ndarray = np.sign(numeric) * np.where(magnitude > 1, outside, magnitude)
    return scaled


def symlog_ticks(values: Any, linthresh: float) -> tuple[list[float], list[str]]:
    """Tick positions (in symlog units) and their labels for the range of `values`."""
    numeric = np.asarray(values, dtype=float)
    numeric = numeric[np.isfinite(numeric)]
    largest = float(np.abs(numeric).max()) if numeric.size else linthresh
    top = max(0, math.ceil(math.log10(max(largest, linthresh) / linthresh)))
    step = max(1, math.ceil(top / 3))
    magnitudes = [linthresh * 10**k for k in range(0, top + 1, step)]
    ticks: list[float] = [0.0]
    texts: list[str] = ["0"]
    for magnitude in magnitudes:
        for sign in (1, -1):
            if (sign > 0 and numeric.size and numeric.max() > 0) or (
                sign < 0 and numeric.size and numeric.min() < 0
            ):
                ticks.append(float(symlog(sign * magnitude, linthresh)))
                texts.append(("-" if sign < 0 else "") + format_number(magnitude, 3))
    return ticks, texts
