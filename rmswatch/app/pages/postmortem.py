"""Postmortem: one run's timeline, hyperparameter diff, alerts, spikes, NaNs, and an HTML export."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from rmswatch.app.components import empty_state, graph, kpi, run_picker, share_link, table
from rmswatch.app.context import current
from rmswatch.app.report import build_report_html, first_nonfinite_sentence, postmortem_data
from rmswatch.app.selection import from_query, pick_run, runs_for
from rmswatch.app.views import common

dash.register_page(
    __name__, path="/postmortem", name="Postmortem", order=4, title="rmswatch · postmortem"
)  # type: ignore[no-untyped-call]


def layout(**query: Any) -> Any:
    context = current()
    selection = from_query(query)
    runs = runs_for(context.engine, selection)
    if runs.empty:
        return html.Div([html.H1("Postmortem"), empty_state(common.NO_RUNS)])
    chosen = pick_run(runs, selection.run, selection.job)
    assert chosen is not None
    return html.Div(
        [
            html.H1("Postmortem"),
            html.Div(
                [
                    run_picker("pm-run", runs, chosen["run_id"]),
                    html.Button("Export HTML report", id="pm-export"),
                    html.A("link to this view", id="pm-share", className="share"),
                    dcc.Download(id="pm-download"),
                ],
                className="controls",
            ),
            html.Div(id="pm-body"),
        ]
    )


@callback(Output("pm-body", "children"), Output("pm-share", "href"), Input("pm-run", "value"))
def show(run_id: str | None) -> tuple[Any, str]:
    data = postmortem_data(current().engine, run_id) if run_id else None
    if data is None:
        return empty_state("pick a run"), "/postmortem"
    run = data.run
    bad = data.first_nonfinite
    return [
        html.Div(
            [
                kpi(
                    "Verdict",
                    data.verdict,
                    tone="good"
                    if data.verdict == "succeeded"
                    else "warn"
                    if data.verdict in ("running", "succeeded with incident")
                    else "bad",
                    detail=f"closed as {run['status']}"
                    + (f": {run['status_detail']}" if run.get("status_detail") else ""),
                    id="kpi-verdict",
                ),
                kpi(
                    "First non-finite step",
                    str(bad["step"]) if bad else "none",
                    tone="bad" if bad else "good",
                    detail=first_nonfinite_sentence(bad),
                    id="kpi-first-nonfinite",
                ),
                kpi("Alerts", str(len(data.alerts))),
                kpi("Loss spikes", str(len(data.spikes))),
            ],
            className="kpis",
        ),
        html.H2("Timeline"),
        table(data.timeline, id="pm-timeline"),
        graph("pm-loss", data.loss_figure),
        html.H2(f"Hyperparameters vs last good run ({data.baseline_run_id or 'none'})"),
        table(data.hyperparameters, id="pm-hparams", empty="no hyperparameters recorded"),
        html.H2("Checkpoints"),
        table(
            data.checkpoints,
            ["step", "time", "action", "ok", "seconds", "size_bytes"],
            empty="no checkpoint events",
        ),
    ], share_link("/postmortem", job=run["job"], run=run["run_id"])


@callback(
    Output("pm-download", "data"),
    Input("pm-export", "n_clicks"),
    State("pm-run", "value"),
    prevent_initial_call=True,
)
def export(_: int, run_id: str | None) -> Any:
    data = postmortem_data(current().engine, run_id) if run_id else None
    if data is None:
        return dash.no_update
    return {
        "content": build_report_html(data),
        "filename": f"rmswatch-postmortem-{run_id}.html",
        "type": "text/html",
    }
