"""Debug views: per-layer RMS histograms and effective LR over steps, layer series, checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.app.views.common import (
    AMBER,
    BLUE,
    MUTED,
    RED,
    add_special_markers,
    empty_figure,
    figure,
    label,
    log_axis,
)

# a layer "diverged" at the first step its gradient norm exceeds this multiple of its own
# median over the first quarter of the run
DIVERGED_FACTOR = 100.0


def failing_layer(
    first_nonfinite: Mapping[str, Any] | None, grad_norms: pd.DataFrame
) -> str | None:
    """The layer to open the debug page on: the first layer that went non-finite, else the one
    whose gradient norm first grew `DIVERGED_FACTOR`x past its early median; None when no layer
    did either (a healthy run opens on its first layer).

    `grad_norms` is the long (step, layer, value) frame of per-layer gradient norms."""
    if first_nonfinite and first_nonfinite.get("layers"):
        return str(first_nonfinite["layers"][0][0])
    if grad_norms.empty:
        return None
    wide = grad_norms.pivot_table(index="step", columns="layer", values="value", aggfunc="first")
    wide = wide.sort_index()
    early = wide.iloc[: max(1, len(wide) // 4)].median()
    first_step: dict[str, float] = {}
    for layer in wide.columns:
        values = wide[layer].astype(float)
        baseline = early[layer]
        if not np.isfinite(baseline) or baseline <= 0:
            continue
        blown = values[~np.isfinite(values) | (values > DIVERGED_FACTOR * baseline)]
        blown = blown[values.notna().reindex(blown.index, fill_value=False)]
        if not blown.empty:
            first_step[str(layer)] = float(blown.index[0])
    if not first_step:
        return None
    return min(first_step, key=lambda name: (first_step[name], name))


def rms_heatmap(hists: pd.DataFrame, edges: Sequence[float], layer: str) -> go.Figure:
    """Buckets x steps heatmap of one layer's sqrt(square_avg) histogram (log10 of counts)."""
    title = f"RMS histogram over steps — {layer}"  # figure() escapes titles
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
    fig.update_yaxes(**log_axis(centers, title_text="sqrt(square_avg)"))
    if "exact" in hists and not hists["exact"].fillna(True).astype(bool).all():
        sampled = hists[~hists["exact"].fillna(True).astype(bool)]
        fig.add_scatter(
            x=sampled["step"], y=[float(centers.max()) * 1.6] * len(sampled), mode="markers",
            name="estimated from a sample (counts scaled; only the shape is meaningful)",
            marker={"color": AMBER, "symbol": "line-ns-open", "size": 8},
            hovertemplate="step %{x}: histogram estimated from a sample<extra></extra>",
        )  # fmt: skip
        fig.update_layout(showlegend=True)
    fig.update_xaxes(title_text="step")
    return fig


def eff_lr_heatmap(matrix: pd.DataFrame) -> go.Figure:
    """Layers x steps heatmap of mean effective learning rate (log10)."""
    title = "Effective learning rate per layer (log10 of mean)"
    values = matrix.dropna(subset=["value"]) if not matrix.empty else matrix
    if values.empty:
        return empty_figure(title, "no effective-LR statistics yet")
    wide = values.pivot_table(index="layer", columns="step", values="value", aggfunc="mean")
    raw = wide.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # zero and non-finite cells are left blank here and drawn as markers below, instead of a
        # log10 clipped to -30 that crushes every other colour
        z = np.where(np.isfinite(raw) & (raw > 0), np.log10(np.where(raw > 0, raw, 1.0)), np.nan)
    names = [label(name) for name in wide.index]
    fig = figure(title, height=max(300, 22 * len(wide) + 100))
    fig.add_heatmap(
        x=list(wide.columns),
        y=names,
        z=z,
        colorscale="Plasma",
        colorbar={"title": "log10"},
        hovertemplate="%{y}<br>step %{x}<br>log10 eff LR %{z:.2f}<extra></extra>",
    )
    for mask, name, color, symbol in (
        (raw == 0, "eff. LR = 0", MUTED, "square-open"),
        (~np.isfinite(raw) & ~np.isnan(raw), "eff. LR NaN/Inf", RED, "x"),
    ):
        rows, cols = np.nonzero(mask)
        if rows.size:
            fig.add_scatter(
                x=[wide.columns[int(c)] for c in cols], y=[names[r] for r in rows], mode="markers",
                name=name, marker={"color": color, "symbol": symbol, "size": 7},
                hovertemplate=f"%{{y}}<br>step %{{x}}: {name}<extra></extra>",
            )  # fmt: skip
    fig.update_yaxes(type="category")
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
    # whole decades only: plotly's automatic log ticks on an overlaid axis print fractional
    # minor labels (e.g. "0.1183008") that read as data
    fig.update_layout(
        yaxis=log_axis(series["grad_norm"], title={"text": "grad norm"}),
        yaxis2={**log_axis(series["update_ratio"], title={"text": "update ratio"}),
                "overlaying": "y", "side": "right", "showgrid": False},
    )  # fmt: skip
    # a zero gradient (a dead layer) or a NaN has no place on a log axis: show it, don't drop it
    add_special_markers(fig, series["step"], series["grad_norm"], log=True, what="grad norm")
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
