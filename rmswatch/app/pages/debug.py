"""Debug: per-layer RMS histograms and effective LR over steps, per-layer series, checkpoints."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, ctx, dcc, html

from rmswatch.app.components import empty_state, graph, run_options, run_picker, share_link
from rmswatch.app.context import current
from rmswatch.app.downsample import downsample_frame
from rmswatch.app.selection import from_query, pick_run, runs_for
from rmswatch.app.views import common, debug
from rmswatch.store import queries

dash.register_page(__name__, path="/debug", name="Debug", order=3, title="rmswatch · debug")  # type: ignore[no-untyped-call]


def layout(**query: Any) -> Any:
    context = current()
    selection = from_query(query)
    runs = runs_for(context.engine, selection)
    if runs.empty:
        return html.Div([html.H1("Debug"), empty_state(common.NO_RUNS)])
    chosen = pick_run(runs, selection.run, selection.job)
    assert chosen is not None
    layers = queries.layer_names(context.engine, int(chosen["run_pk"]))
    asked = query.get("layer")
    layer = (
        asked if asked in layers else opening_layer(context.engine, int(chosen["run_pk"]), layers)
    )
    return html.Div(
        [
            html.H1("Debug"),
            html.Div(
                [
                    run_picker("debug-run", runs, chosen["run_id"]),
                    dcc.Dropdown(
                        id="debug-layer",
                        options=layers,
                        value=layer,
                        clearable=False,
                        className="picker",
                    ),
                    html.A("link to this view", id="debug-share", className="share"),
                ],
                className="controls",
            ),
            html.Div(
                [
                    html.Div(graph("debug-rms"), className="col"),
                    html.Div(graph("debug-series"), className="col"),
                ],
                className="row",
            ),
            graph("debug-efflr"),
            html.Div(id="debug-checkpoints"),
            dcc.Store(id="debug-query", data=dict(query)),
        ]
    )


def opening_layer(engine: Any, run_pk: int, layers: list[str]) -> str | None:
    """The first layer that went non-finite or diverged, else the first layer."""
    found = debug.failing_layer(
        queries.first_nonfinite(engine, run_pk), queries.layer_matrix(engine, run_pk, "grad_norm")
    )
    return found if found in layers else (layers[0] if layers else None)


@callback(
    Output("debug-run", "options"),
    Input("refresh", "n_intervals"),
    State("debug-query", "data"),
    prevent_initial_call=True,
)
def refresh_picker(_: int, query: dict[str, Any] | None) -> list[dict[str, str]]:
    return run_options(runs_for(current().engine, from_query(query or {})))


@callback(
    Output("debug-layer", "options"),
    Output("debug-layer", "value"),
    Input("debug-run", "value"),
    Input("debug-layer", "value"),
)
def layers_of_run(run_id: str | None, layer: str | None) -> tuple[list[str], str | None]:
    context = current()
    run = queries.run(context.engine, run_id) if run_id else None
    if run is None:
        return [], None
    names = queries.layer_names(context.engine, int(run["run_pk"]))
    if ctx.triggered_id == "debug-layer" and layer in names:
        return names, layer
    # a run picked (or the page opened): open on the layer that failed first
    if ctx.triggered_id is None and layer in names:
        return names, layer
    return names, opening_layer(context.engine, int(run["run_pk"]), names)


@callback(
    Output("debug-rms", "figure"),
    Output("debug-series", "figure"),
    Output("debug-share", "href"),
    Input("debug-run", "value"),
    Input("debug-layer", "value"),
    Input("refresh", "n_intervals"),
)
def layer_figures(run_id: str | None, layer: str | None, _: int) -> tuple[Any, Any, str]:
    context = current()
    run = queries.run(context.engine, run_id) if run_id else None
    if run is None or layer is None:
        message = (
            "pick a run"
            if run is None
            else "this run recorded no per-layer statistics (no steps, or watch() without model=)"
        )
        empty = common.empty_figure("", message)
        return empty, empty, "/debug"
    run_pk = int(run["run_pk"])
    hists = queries.histograms(context.engine, run_pk, layer)
    series = queries.layer_series(context.engine, run_pk, layer, ["grad_norm", "update_ratio"])
    return (
        debug.rms_heatmap(hists, run.get("hist_edges") or [], layer),
        debug.layer_series_figure(
            downsample_frame(series, ["grad_norm", "update_ratio"]),
            layer,
            (queries.first_nonfinite(context.engine, run_pk) or {}).get("step"),
        ),
        share_link("/debug", job=run["job"], run=run["run_id"], layer=layer),
    )


@callback(
    Output("debug-efflr", "figure"),
    Output("debug-checkpoints", "children"),
    Input("debug-run", "value"),
    Input("refresh", "n_intervals"),
)
def run_figures(run_id: str | None, _: int) -> tuple[Any, Any]:
    context = current()
    run = queries.run(context.engine, run_id) if run_id else None
    if run is None:
        empty = common.empty_figure("", common.NO_RUNS)
        return empty, empty
    run_pk = int(run["run_pk"])
    return (
        debug.eff_lr_heatmap(queries.layer_matrix(context.engine, run_pk, "eff_lr_mean")),
        _checkpoints(queries.checkpoints(context.engine, run_pk)),
    )


def _checkpoints(checkpoints: Any) -> Any:
    """The checkpoint chart, or one line when the run recorded none (no half-page of axes)."""
    saves = checkpoints[checkpoints["action"] == "save"] if not checkpoints.empty else checkpoints
    if saves.empty:
        return html.Div(
            "Checkpoints: none recorded — call monitor.record_checkpoint(...) after each save",
            className="empty",
            id="debug-checkpoints-none",
        )
    return graph("debug-checkpoints-graph", debug.checkpoint_figure(checkpoints))
