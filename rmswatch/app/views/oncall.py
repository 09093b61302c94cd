"""On-call views: job health at a glance, loss with alert markers, NaN counts, LR and gradients."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.app.views.common import (
    AMBER,
    BLUE,
    GREEN,
    MUTED,
    RED,
    empty_figure,
    figure,
    format_age,
)

STATUS_ORDER = {"diverged": 0, "failed": 1, "crashed": 1, "stalled": 2, "running": 3}


def jobs_table(runs: pd.DataFrame, now: datetime, stale_after_s: float = 300.0) -> pd.DataFrame:
    """The newest run of every job with its status and heartbeat age, worst first."""
    columns = ["job", "run_id", "model", "cluster", "status", "last_step", "heartbeat",
               "heartbeat_s", "stale"]  # fmt: skip
    if runs.empty:
        return pd.DataFrame(columns=columns)
    newest = runs.sort_values("started_at").groupby("job", as_index=False).tail(1).copy()
    beat = newest["last_step_at"].fillna(newest["started_at"])
    newest["heartbeat_s"] = (pd.Timestamp(now) - beat).dt.total_seconds()
    newest["heartbeat"] = [format_age(s) for s in newest["heartbeat_s"]]
    labels = newest["labels"] if "labels" in newest else pd.Series([{}] * len(newest))
    for name in ("model", "cluster"):
        newest[name] = [
            str(found.get(name, "")) if isinstance(found, dict) else "" for found in labels
        ]
    newest["stale"] = (newest["status"] == "running") & (newest["heartbeat_s"] > stale_after_s)
    newest["rank"] = [STATUS_ORDER.get(s, 4) for s in newest["status"]]
    newest = newest.sort_values(["stale", "rank", "job"], ascending=[False, True, True])
    return newest[columns].reset_index(drop=True)


LOG_SCALE_DECADES = 3.0


def _spans_decades(values: pd.Series) -> bool:
    """True when the positive finite values span more than LOG_SCALE_DECADES powers of ten."""
    finite = values[np.isfinite(values.to_numpy(dtype=float)) & (values > 0)]
    if finite.empty:
        return False
    return bool(np.log10(finite.max() / finite.min()) > LOG_SCALE_DECADES)


def loss_figure(
    steps: pd.DataFrame,
    validations: pd.DataFrame,
    alert_steps: pd.DataFrame | None = None,
    *,
    title: str = "Training and validation loss",
) -> go.Figure:
    """Loss per step with validation points; alerts as red markers on the curve."""
    if steps.empty:
        return empty_figure(
            title, "no steps yet — the loss appears after the first optimizer.step()"
        )
    fig = figure(title, height=340)
    fig.add_scattergl(
        x=steps["step"],
        y=steps["loss"],
        name="training loss",
        mode="lines",
        line={"color": BLUE, "width": 1.5},
    )
    if not validations.empty:
        fig.add_scatter(
            x=validations["step"],
            y=validations["value"],
            name="validation loss",
            mode="lines+markers",
            line={"color": AMBER, "width": 3},
        )
    loss = pd.to_numeric(steps["loss"], errors="coerce").astype(float)
    val_loss = (
        pd.to_numeric(validations["value"], errors="coerce").astype(float)
        if "value" in validations
        else pd.Series(dtype=float)
    )
    if _spans_decades(pd.concat([loss, val_loss])):
        # a diverging run's loss climbs by orders of magnitude: on a linear axis everything
        # before the blow-up is a flat line at zero, hiding where it started
        fig.update_yaxes(type="log", exponentformat="e", dtick=1, title_text="loss (log)")
    nonfinite = steps[~np.isfinite(loss.to_numpy())]
    if not nonfinite.empty:
        first = int(nonfinite["step"].iloc[0])
        fig.add_vrect(
            x0=first, x1=steps["step"].iloc[-1], fillcolor=RED, opacity=0.15, line_width=0
        )
        fig.add_vline(
            x=first,
            line_color=RED,
            line_width=2,
            annotation_text=f"first non-finite loss: step {first}",
            annotation_font_color=RED,
        )
    if alert_steps is not None and not alert_steps.empty:
        fig.add_scatter(
            x=alert_steps["step"],
            y=alert_steps["loss"],
            mode="markers",
            name="alert",
            marker={"color": RED, "size": 13, "symbol": "x"},
            text=alert_steps["label"],
            hovertemplate="%{text}<extra>alert</extra>",
        )
    fig.update_xaxes(title_text="step")
    return fig


def alert_markers(
    alerts: pd.DataFrame, alert_steps: list[int | None], steps: pd.DataFrame
) -> pd.DataFrame:
    """Alerts placed on the loss curve at the step each started at (`alert_steps`, same order)."""
    if alerts.empty or steps.empty:
        return pd.DataFrame(columns=["step", "loss", "label"])
    placed = pd.DataFrame({"step": alert_steps, "label": alerts["alertname"].astype(str).tolist()})
    placed = placed.dropna(subset=["step"]).astype({"step": "int64"})
    curve = steps[["step", "loss"]].sort_values("step")
    return pd.merge_asof(placed.sort_values("step"), curve, on="step", direction="backward")[
        ["step", "loss", "label"]
    ]


def nonfinite_figure(totals: dict[str, int]) -> go.Figure:
    title = "NaN / Inf values in this run"
    fig = figure(title, height=260)
    kinds = list(totals)
    values = [totals[k] for k in kinds]
    fig.add_bar(
        x=kinds,
        y=values,
        marker_color=[RED if v else GREEN for v in values],
        text=[str(v) for v in values],
        textposition="auto",
        name="non-finite",
    )
    return fig


def eff_lr_figure(layers: pd.DataFrame) -> go.Figure:
    """Distribution of effective learning rate per layer at the latest step (p5..p95 boxes)."""
    title = "Effective learning rate per layer (latest step)"
    if layers.empty:
        return empty_figure(title, "no per-layer statistics yet — pass model= to rmswatch.watch")
    fig = figure(title, height=max(260, 28 * len(layers) + 80))
    fig.add_trace(
        go.Box(
            y=layers["layer"],
            lowerfence=layers["eff_lr_min"],
            q1=layers["eff_lr_p50"],
            median=layers["eff_lr_p50"],
            q3=layers["eff_lr_p95"],
            upperfence=layers["eff_lr_max"],
            mean=layers["eff_lr_mean"],
            orientation="h",
            marker_color=BLUE,
            name="eff. LR",
        )
    )
    fig.update_xaxes(type="log", title_text="lr / (sqrt(v) + eps)")
    return fig


def grad_norm_histogram(grad_norms: pd.Series, bins: int = 40) -> go.Figure:
    """Histogram of the run's global gradient norm (binned on the server)."""
    title = "Gradient-norm distribution"
    values = pd.to_numeric(grad_norms, errors="coerce").astype(float).to_numpy()
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return empty_figure(title, "no finite gradient norms recorded yet")
    edges = np.logspace(np.log10(values.min()), np.log10(values.max() * 1.0001), bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    fig = figure(title, height=260)
    fig.add_bar(x=np.sqrt(edges[:-1] * edges[1:]), y=counts, marker_color=MUTED, name="steps")
    fig.update_xaxes(type="log", title_text="‖grad‖")
    return fig
