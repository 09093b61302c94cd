"""On-call views: job health at a glance, loss with alert markers, NaN counts, LR and gradients."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rmswatch.app.views.common import (
    AMBER,
    BLUE,
    GREEN,
    GRID,
    MUTED,
    PURPLE,
    RED,
    SERIES,
    add_special_markers,
    empty_figure,
    figure,
    format_age,
    format_number,
    label,
    log_axis,
    spans_decades,
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
    return spans_decades(values, LOG_SCALE_DECADES)


def lr_columns(steps: pd.DataFrame) -> pd.DataFrame:
    """`step` plus one `lr group N` column per param group, from `lrs` (one LR per group, as
    recorded) or, for stores written before it existed, `lr` (the first group's)."""
    out = pd.DataFrame({"step": steps["step"]}) if "step" in steps else pd.DataFrame()
    groups = steps["lrs"] if "lrs" in steps else pd.Series([None] * len(steps), index=steps.index)
    width = max((len(g) for g in groups if isinstance(g, list | tuple)), default=0)
    if width == 0:
        if "lr" in steps:
            out["lr group 0"] = pd.to_numeric(steps["lr"], errors="coerce").astype(float)
        return out
    for group in range(width):
        out[f"lr group {group}"] = [_group_lr(g, group) for g in groups]
    return out


def _group_lr(lrs: object, group: int) -> float:
    if isinstance(lrs, list | tuple) and len(lrs) > group and lrs[group] is not None:
        return float(lrs[group])
    return float("nan")


# a change of the LR by more than this factor between two recorded steps is a jump someone (or
# a step schedule) made, not a smooth schedule's drift
LR_JUMP = 1.5


def lr_changes(lrs: pd.DataFrame, factor: float = LR_JUMP) -> pd.DataFrame:
    """Steps where a group's LR jumped by more than `factor` from the previous recorded step:
    (step, group, before, after)."""
    rows: list[dict[str, object]] = []
    for column in [c for c in lrs.columns if c.startswith("lr group ")]:
        values = lrs[column].astype(float)
        before = values.shift(1)
        ratio = values / before
        jumped = np.isfinite(ratio) & ((ratio > factor) | (ratio < 1 / factor))
        rows.extend(
            {"step": int(step), "group": column.removeprefix("lr "), "before": b, "after": a}
            for step, b, a in zip(lrs["step"][jumped], before[jumped], values[jumped], strict=True)
        )
    return pd.DataFrame(rows, columns=["step", "group", "before", "after"])


def training_figure(
    steps: pd.DataFrame,
    validations: pd.DataFrame,
    alert_steps: pd.DataFrame | None = None,
    *,
    title: str = "Loss, gradient norm and learning rate",
) -> go.Figure:
    """Loss, gradient norm (pre- and post-clip) and LR per group on one step axis, so the step
    where the LR was raised by hand lines up with where the loss and gradients took off.

    `steps` has `step`, `loss`, `grad_norm` and, when recorded, `grad_norm_before_clip`,
    `skipped`, `lrs`/`lr`. Zero and NaN/Inf values are markers; a large span is a log axis."""
    if steps.empty:
        return empty_figure(
            title, "no steps yet — the loss appears after the first optimizer.step()"
        )
    fig = make_subplots(
        rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.45, 0.3, 0.25],
        subplot_titles=("loss", "gradient norm", "learning rate per param group"),
    )  # fmt: skip
    fig.update_layout(_layout(figure(title, height=640)))
    fig.update_annotations(font={"size": 12, "color": MUTED})
    _loss_row(fig, steps, validations, alert_steps)
    _grad_row(fig, steps)
    _lr_row(fig, steps)
    loss = pd.to_numeric(steps["loss"], errors="coerce").astype(float)
    nonfinite = steps[~np.isfinite(loss.to_numpy())]
    if not nonfinite.empty:
        first = int(nonfinite["step"].iloc[0])
        fig.add_vrect(
            x0=first, x1=steps["step"].iloc[-1], fillcolor=RED, opacity=0.12, line_width=0,
            row="all", col=1,
        )  # fmt: skip
        fig.add_vline(x=first, line_color=RED, line_width=2, row="all", col=1)
        fig.add_annotation(
            x=first, y=1.0, xref="x", yref="paper", yanchor="bottom", showarrow=False,
            text=f"first non-finite loss: step {first}", font={"color": RED},
        )  # fmt: skip
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_layout(legend={"orientation": "h", "y": -0.12})
    return fig


def _layout(base: go.Figure) -> dict[str, object]:
    layout: dict[str, object] = dict(base.layout.to_plotly_json())
    layout.pop("xaxis", None)
    layout.pop("yaxis", None)
    return layout


def _y_axis(fig: go.Figure, values: pd.Series, row: int, title: str) -> bool:
    """Log when the values span decades (readable ticks); returns whether it is log."""
    log = _spans_decades(values)
    extra: dict[str, object] = log_axis(values, ticks=5 if row == 1 else 3) if log else {}
    fig.update_yaxes(title_text=title, gridcolor=GRID, zerolinecolor=GRID, row=row, col=1, **extra)
    fig.update_xaxes(gridcolor=GRID, zerolinecolor=GRID, row=row, col=1)
    return log


def _loss_row(
    fig: go.Figure, steps: pd.DataFrame, validations: pd.DataFrame, alerts: pd.DataFrame | None
) -> None:
    loss = pd.to_numeric(steps["loss"], errors="coerce").astype(float)
    val = (
        pd.to_numeric(validations["value"], errors="coerce").astype(float)
        if "value" in validations
        else pd.Series(dtype=float)
    )
    log = _y_axis(
        fig,
        pd.concat([loss, val]),
        1,
        "loss (log)" if _spans_decades(pd.concat([loss, val])) else "loss",
    )
    shown = loss.where(np.isfinite(loss) & ((loss > 0) | (not log)))
    fig.add_scattergl(
        x=steps["step"], y=shown, name="training loss", mode="lines",
        line={"color": BLUE, "width": 1.5}, row=1, col=1,
    )  # fmt: skip
    if not validations.empty:
        fig.add_scatter(
            x=validations["step"], y=val.where(np.isfinite(val)), name="validation loss",
            mode="lines+markers", line={"color": AMBER, "width": 3}, row=1, col=1,
        )  # fmt: skip
    add_special_markers(fig, steps["step"], loss, log=log, what="loss", row=1)
    if alerts is not None and not alerts.empty:
        y = pd.to_numeric(alerts["loss"], errors="coerce").astype(float)
        fig.add_scatter(
            x=alerts["step"], y=y.where(np.isfinite(y)), mode="markers", name="alert fired",
            marker={"color": RED, "size": 13, "symbol": "x"},
            text=[label(t) for t in alerts["label"]],
            hovertemplate="step %{x}: %{text}<extra>alert</extra>", row=1, col=1,
        )  # fmt: skip


def _grad_row(fig: go.Figure, steps: pd.DataFrame) -> None:
    after = pd.to_numeric(steps["grad_norm"], errors="coerce").astype(float)
    before = (
        pd.to_numeric(steps["grad_norm_before_clip"], errors="coerce").astype(float)
        if "grad_norm_before_clip" in steps
        else pd.Series(np.nan, index=steps.index)
    )
    has_before = bool(before.notna().any())
    log = _y_axis(fig, pd.concat([after, before]), 2, "‖grad‖")
    if has_before:
        fig.add_scattergl(
            x=steps["step"], y=before.where(np.isfinite(before) & ((before > 0) | (not log))),
            name="grad norm before clipping", mode="lines",
            line={"color": PURPLE, "width": 1.2, "dash": "dot"}, row=2, col=1,
        )  # fmt: skip
    fig.add_scattergl(
        x=steps["step"], y=after.where(np.isfinite(after) & ((after > 0) | (not log))),
        name="grad norm (after clipping)" if has_before else "grad norm", mode="lines",
        line={"color": GREEN, "width": 1.5}, row=2, col=1,
    )  # fmt: skip
    add_special_markers(fig, steps["step"], after, log=log, what="grad norm", row=2)


def _lr_row(fig: go.Figure, steps: pd.DataFrame) -> None:
    lrs = lr_columns(steps)
    groups = [c for c in lrs.columns if c.startswith("lr group ")]
    values = pd.concat([lrs[c] for c in groups]) if groups else pd.Series(dtype=float)
    log = _y_axis(fig, values, 3, "lr")
    if not groups or not values.notna().any():
        fig.add_annotation(
            text="no learning rate recorded", showarrow=False, xref="x domain", yref="y3 domain",
            x=0.5, y=0.5, font={"color": MUTED},
        )  # fmt: skip
        return
    for index, column in enumerate(groups):
        fig.add_scattergl(
            x=lrs["step"], y=lrs[column], name=column, mode="lines",
            line={"color": SERIES[(index + 4) % len(SERIES)], "width": 2, "shape": "hv"},
            row=3, col=1,
        )  # fmt: skip
    changes = lr_changes(lrs)
    if not changes.empty:
        fig.add_scatter(
            x=changes["step"], y=changes["after"], mode="markers", name="LR changed",
            marker={"color": RED, "symbol": "triangle-up", "size": 11},
            text=[
                f"{g}: {format_number(b, 3)} → {format_number(a, 3)}"
                for g, b, a in changes[["group", "before", "after"]].itertuples(index=False)
            ],
            hovertemplate="step %{x}: LR %{text}<extra></extra>", row=3, col=1,
        )  # fmt: skip
    if "skipped" in steps:
        skipped = steps[steps["skipped"].fillna(False).astype(bool)]
        if not skipped.empty:
            bottom = float(values[values > 0].min()) if log and (values > 0).any() else 0.0
            fig.add_scatter(
                x=skipped["step"], y=[bottom] * len(skipped), mode="markers",
                name="skipped AMP step",
                marker={"color": AMBER, "symbol": "x-thin-open", "size": 10},
                hovertemplate="step %{x}: the GradScaler skipped this step<extra></extra>",
                row=3, col=1,
            )  # fmt: skip


def loss_figure(
    steps: pd.DataFrame,
    validations: pd.DataFrame,
    alert_steps: pd.DataFrame | None = None,
    *,
    title: str = "Training and validation loss",
) -> go.Figure:
    """Loss per step with validation points; alerts as red markers on the curve (the report's
    figure; the pages draw `training_figure`)."""
    if steps.empty:
        return empty_figure(
            title, "no steps yet — the loss appears after the first optimizer.step()"
        )
    fig = figure(title, height=340)
    loss = pd.to_numeric(steps["loss"], errors="coerce").astype(float)
    val_loss = (
        pd.to_numeric(validations["value"], errors="coerce").astype(float)
        if "value" in validations
        else pd.Series(dtype=float)
    )
    log = _spans_decades(pd.concat([loss, val_loss]))
    fig.add_scattergl(
        x=steps["step"],
        y=loss.where(np.isfinite(loss) & ((loss > 0) | (not log))),
        name="training loss",
        mode="lines",
        line={"color": BLUE, "width": 1.5},
    )
    if not validations.empty:
        fig.add_scatter(
            x=validations["step"],
            y=val_loss.where(np.isfinite(val_loss)),
            name="validation loss",
            mode="lines+markers",
            line={"color": AMBER, "width": 3},
        )
    if log:
        # a diverging run's loss climbs by orders of magnitude: on a linear axis everything
        # before the blow-up is a flat line at zero, hiding where it started
        fig.update_yaxes(**log_axis(pd.concat([loss, val_loss]), title_text="loss (log)"))
    add_special_markers(fig, steps["step"], loss, log=log, what="loss")
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
            text=[label(t) for t in alert_steps["label"]],
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


STEP_COLUMNS = ["loss", "grad_norm", "grad_norm_before_clip", "skipped", "lrs", "lr"]


def shown_steps(steps: pd.DataFrame, max_points: int = 4000) -> pd.DataFrame:
    """The rows a page draws: the downsampled extremes plus every step an event marks (a skipped
    AMP step, an LR jump), which a min/max bucket would otherwise drop."""
    from rmswatch.app.downsample import downsample_frame

    shown = downsample_frame(steps, ["loss", "grad_norm"], max_points)
    if len(shown) == len(steps):
        return steps
    marked = steps["skipped"].fillna(False).astype(bool) if "skipped" in steps else None
    lrs = lr_columns(steps)
    jumps = set(lr_changes(lrs)["step"])
    keep = steps["step"].isin(jumps)
    if marked is not None:
        keep = keep | marked
    # the step before each jump too, so the line shows the old value up to it
    before = steps["step"].shift(-1).isin(jumps)
    return (
        pd.concat([shown, steps[keep | before]])
        .drop_duplicates("step")
        .sort_values("step")
        .reset_index(drop=True)
    )


def nonfinite_figure(totals: dict[str, int]) -> go.Figure:
    """NaN/Inf counts by kind; a run with none says so instead of drawing zero-height bars."""
    title = "NaN / Inf values in this run"
    if not any(totals.values()):
        return empty_figure(
            title,
            "no NaN/Inf — every gradient, parameter, optimizer state and loss was finite",
            height=260,
        )
    fig = figure(title, height=260)
    kinds = list(totals)
    values = [totals[k] for k in kinds]
    fig.add_bar(
        x=kinds,
        y=values,
        marker_color=[RED if v else GREEN for v in values],
        text=[f"{v:,}" for v in values],
        textposition="auto",
        name="non-finite values",
        hovertemplate="%{x}: %{y:,} non-finite values<extra></extra>",
    )
    fig.update_yaxes(title_text="values (all steps)", rangemode="tozero")
    return fig


def eff_lr_figure(layers: pd.DataFrame, exact: dict[str, bool] | None = None) -> go.Figure:
    """Distribution of effective learning rate per layer at the latest step (min, p50, p95,
    max). Layers whose statistics were estimated from a sample (`exact[layer]` False) are drawn
    hollow in another colour: their min/max are estimates, not the tensor's extremes."""
    title = "Effective learning rate per layer (latest step)"
    if layers.empty:
        return empty_figure(title, "no per-layer statistics yet — pass model= to rmswatch.watch")
    quantiles = layers[["eff_lr_min", "eff_lr_p50", "eff_lr_p95", "eff_lr_max"]].apply(
        pd.to_numeric, errors="coerce"
    )
    drawable = np.isfinite(quantiles.to_numpy(dtype=float)).all(axis=1)
    if not drawable.any():
        return empty_figure(
            title,
            f"no finite effective LR at the latest step in any of the {len(layers)} layers "
            "(NaN/Inf or no optimizer state yet) — Debug shows when it went",
            height=260,
        )
    unplotted = [str(name) for name in layers["layer"][~drawable]]
    if unplotted:
        shown = ", ".join(unplotted[:4]) + (" …" if len(unplotted) > 4 else "")
        title = f"{title} — NaN/Inf, not drawn: {shown}"
    layers = layers[drawable]
    fig = figure(title, height=max(260, 28 * len(layers) + 100))
    flags = [bool((exact or {}).get(name, True)) for name in layers["layer"]]
    for is_exact in (True, False):
        rows = layers[[f is is_exact for f in flags]]
        if rows.empty:
            continue
        fig.add_trace(
            go.Box(
                y=[label(name) for name in rows["layer"]],
                lowerfence=rows["eff_lr_min"],
                q1=rows["eff_lr_p50"],
                median=rows["eff_lr_p50"],
                q3=rows["eff_lr_p95"],
                upperfence=rows["eff_lr_max"],
                mean=rows["eff_lr_mean"],
                orientation="h",
                marker_color=BLUE if is_exact else AMBER,
                fillcolor="rgba(88,166,255,0.35)" if is_exact else "rgba(0,0,0,0)",
                line={"color": BLUE if is_exact else AMBER},
                name="exact" if is_exact else "estimated from a sample",
            )
        )
    values = pd.concat([layers[c] for c in ("eff_lr_min", "eff_lr_max", "eff_lr_p50")])
    fig.update_xaxes(**log_axis(values, title_text="lr / (sqrt(v) + eps)"))
    fig.update_layout(showlegend=True)
    return fig


def grad_norm_histogram(grad_norms: pd.Series, bins: int = 40) -> go.Figure:
    """Histogram of the run's global gradient norm (binned on the server); zero and non-finite
    norms are counted in the title, since a log axis has no place for them."""
    title = "Gradient-norm distribution"
    raw = pd.to_numeric(grad_norms, errors="coerce").astype(float).to_numpy()
    values = raw[np.isfinite(raw) & (raw > 0)]
    zeros = int((raw == 0).sum())
    bad = int((~np.isfinite(raw) & ~pd.isna(grad_norms).to_numpy()).sum())
    extra = ", ".join(
        part for part in (f"{zeros} zero" if zeros else "", f"{bad} NaN/Inf" if bad else "") if part
    )
    if extra:
        title = f"{title} (+ {extra} steps)"
    if values.size == 0:
        return empty_figure(title, "no finite, non-zero gradient norms recorded yet")
    edges = np.logspace(np.log10(values.min()), np.log10(values.max() * 1.0001), bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    fig = figure(title, height=260)
    fig.add_bar(x=np.sqrt(edges[:-1] * edges[1:]), y=counts, marker_color=MUTED, name="steps")
    fig.update_xaxes(**log_axis(values, title_text="‖grad‖"))
    fig.update_yaxes(title_text="steps")
    return fig
