"""Debug views: per-layer RMS histograms and effective LR over steps, layer series, checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.app.views.common import AMBER, BLUE, RED, empty_figure, figure


def rms_heatmap(hists: pd.DataFrame, edges: Sequence[float], layer: str) -> go.Figure:
    """Buckets x steps heatmap of one layer's sqrt(square_avg) histogram (log10 of counts)."""
    title = f"RMS histogram over steps — {layer}"
    if hists.empty or len(edges) < 2:
        return empty_figure(title, "no RMS histograms for this layer yet")
    matrix = np.array([list(c) for c in hists["counts"]], dtype=float).T
    width = min(matrix.shape[0], len(edges) - 1)
    centers = np.sqrt(np.asarray(edges[:-1], float) * np.asarray(edges[1:], float))[:width]
    fig = figure(title, height=340)
    fig.add_heatmap(
        x=hists["step"],
        y=centers,
        z=np.log10(1.0 + matrix[:width]),
        colorscale="Viridis",
        colorbar={"title": "log10(1+n)"},
        hovertemplate="step %{x}<br>rms≈%{y:.2e}<br>log10(1+n)=%{z:.2f}<extra></extra>",
    )
    fig.update_yaxes(type="log", title_text="sqrt(square_avg)")
    fig.update_xaxes(title_text="step")
    return fig


def eff_lr_heatmap(matrix: pd.DataFrame) -> go.Figure:
    """Layers x steps heatmap of mean effective learning rate (log10)."""
    title = "Effective learning rate per layer (log10 of mean)"
    values = matrix.dropna(subset=["value"]) if not matrix.empty else matrix
    if values.empty:
        return empty_figure(title, "no effective-LR statistics yet")
    wide = values.pivot_table(index="layer", columns="step", values="value", aggfunc="mean")
    z = np.log10(wide.to_numpy(dtype=float).clip(min=1e-30))
    fig = figure(title, height=max(300, 22 * len(wide) + 100))
    fig.add_heatmap(
        x=list(wide.columns),
        y=list(wide.index),
        z=z,
        colorscale="Plasma",
        colorbar={"title": "log10"},
        hovertemplate="%{y}<br>step %{x}<br>log10 eff LR %{z:.2f}<extra></extra>",
    )
    fig.update_xaxes(title_text="step")
    return fig


def _log_plottable(values: pd.Series) -> pd.Series:
    """NaN where a log axis cannot draw a value (<= 0, NaN, ±Inf): an Inf would otherwise
    stretch the axis' autorange to nothing and hide the whole curve."""
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    return numeric.where(np.isfinite(numeric) & (numeric > 0))


def layer_series_figure(
    series: pd.DataFrame, layer: str, first_nonfinite_step: int | None = None
) -> go.Figure:
    """Gradient norm and update ratio of one layer, two log y axes; the run's first non-finite
    step marked (the curves stop there: NaN has no place on a log axis)."""
    title = f"Gradient norm and update ratio — {layer}"
    if series.empty:
        return empty_figure(title, "no statistics for this layer yet — pick another layer")
    fig = figure(title, height=320)
    fig.add_scattergl(
        x=series["step"], y=_log_plottable(series["grad_norm"]), name="grad norm",
        line={"color": BLUE},
    )  # fmt: skip
    fig.add_scattergl(
        x=series["step"],
        y=_log_plottable(series["update_ratio"]),
        name="update ratio",
        yaxis="y2",
        line={"color": AMBER},
    )
    fig.update_layout(
        # one tick per decade: plotly's automatic log ticks on an overlaid axis print
        # fractional minor labels (e.g. "0.1183008") that read as data
        yaxis={"type": "log", "title": {"text": "grad norm"}, "exponentformat": "e", "dtick": 1},
        yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "type": "log",
                "title": {"text": "update ratio"}, "exponentformat": "e", "dtick": 1},
    )  # fmt: skip
    if first_nonfinite_step is not None:
        fig.add_vline(
            x=first_nonfinite_step,
            line_color=RED,
            line_width=2,
            annotation_text=f"first NaN/Inf: step {first_nonfinite_step}",
            annotation_font_color=RED,
        )
    fig.update_xaxes(title_text="step")
    return fig


def checkpoint_figure(checkpoints: pd.DataFrame) -> go.Figure:
    """Checkpoint size (bars) and save latency (line) per save; failed saves in red."""
    title = "Checkpoint size and save latency"
    saves = checkpoints[checkpoints["action"] == "save"] if not checkpoints.empty else checkpoints
    if saves.empty:
        return empty_figure(title, "no checkpoints recorded — call monitor.record_checkpoint(...)")
    fig = figure(title, height=280)
    fig.add_bar(
        x=saves["step"],
        y=saves["size_bytes"].astype(float) / 1e6,
        name="size (MB)",
        marker_color=[BLUE if ok else RED for ok in saves["ok"]],
    )
    fig.add_scatter(
        x=saves["step"],
        y=saves["seconds"],
        name="save seconds",
        yaxis="y2",
        mode="lines+markers",
        line={"color": AMBER, "width": 3},
    )
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False})
    fig.update_xaxes(title_text="step")
    return fig
