"""On-call: what is firing, which jobs are unhealthy, and the run's loss, NaNs, LR and gradients."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dash
import pandas as pd
from dash import ALL, Input, Output, State, callback, ctx, dcc, html

from rmswatch.app import alerts
from rmswatch.app.components import (
    empty_state,
    graph,
    kpi,
    run_options,
    run_picker,
    share_link,
    table,
)
from rmswatch.app.context import current
from rmswatch.app.selection import describe, from_query, pick_run, runs_for
from rmswatch.app.views import common, oncall
from rmswatch.store import queries

dash.register_page(__name__, path="/oncall", name="On-call", order=0, title="rmswatch · on-call")  # type: ignore[no-untyped-call]

RUNBOOKS = (
    ("Loss divergence", "divergence.md"),
    ("NaN / Inf values", "nan.md"),
    ("Stalled job", "stalled-job.md"),
    ("Slow convergence", "slow-convergence.md"),
    ("Checkpoint mismatch", "checkpoint-mismatch.md"),
)


# resolved pages stay on the on-call view this long: what woke (or would have woken) someone
RESOLVED_WINDOW_HOURS = 24


def layout(**query: Any) -> Any:
    context = current()
    selection = from_query(query, context.clock())
    runs = runs_for(context.engine, selection)
    window = describe(selection)
    scope = (
        html.P(
            [f"Showing {window} (from the alert link). ", html.A("Show all runs", href="/oncall")],
            className="note",
            id="oncall-window",
        )
        if window
        else None
    )
    if runs.empty:
        message = f"no {window}" if window else common.NO_RUNS
        return html.Div([html.H1("On-call"), scope, empty_state(message)])
    chosen = pick_run(runs, selection.run, selection.job)
    run_id = chosen["run_id"] if chosen else None
    return html.Div(
        [
            html.H1("On-call"),
            scope,
            html.Div(id="oncall-kpis", className="kpis"),
            html.H2("Active alerts"),
            html.Div(id="oncall-alerts"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="silence-target", placeholder="alert to silence", className="picker"
                    ),
                    dcc.RadioItems(
                        id="silence-duration",
                        options=[{"label": " 1h", "value": 1}, {"label": " 4h", "value": 4}],
                        value=1,
                        inline=True,
                    ),
                    dcc.Input(id="silence-author", type="text", placeholder="your name"),
                    dcc.Input(
                        id="silence-comment",
                        type="text",
                        placeholder="why (required), e.g. investigating LR spike",
                    ),
                    html.Button("Silence", id="silence-submit", className="danger"),
                    html.Span(id="silence-result", className="note"),
                ],
                className="controls",
            ),
            html.H2(f"Resolved in the last {RESOLVED_WINDOW_HOURS} h"),
            html.Div(id="oncall-resolved"),
            html.H2("Jobs"),
            html.Div(id="oncall-jobs"),
            html.Div(
                [
                    run_picker("oncall-run", runs, run_id),
                    html.A("link to this view", id="oncall-share", className="share"),
                ],
                className="controls",
            ),
            graph("oncall-loss"),
            html.Div(
                [
                    html.Div(graph("oncall-nonfinite"), className="col"),
                    html.Div(graph("oncall-gradnorm"), className="col"),
                ],
                className="row",
            ),
            graph("oncall-efflr"),
            html.H2("Runbooks"),
            html.Ul(
                [html.Li(html.A(title, href=f"/runbooks/{name}")) for title, name in RUNBOOKS],
                id="runbooks",
            ),
            dcc.Store(id="oncall-job", data=selection.job),
            dcc.Store(id="oncall-query", data=dict(query)),
        ]
    )


@callback(
    Output("oncall-kpis", "children"),
    Output("oncall-alerts", "children"),
    Output("silence-target", "options"),
    Output("oncall-jobs", "children"),
    Output("oncall-resolved", "children"),
    Input("refresh", "n_intervals"),
    Input("silence-result", "children"),
)
def refresh_status(_: int, __: Any) -> tuple[Any, Any, Any, Any, Any]:
    context = current()
    active = alerts.active_alerts(context.engine)
    resolved = alerts.resolved_alerts(
        context.engine, context.clock() - timedelta(hours=RESOLVED_WINDOW_HOURS)
    )
    runs = queries.runs(context.engine)
    jobs = oncall.jobs_table(runs, context.clock())
    firing = active[active["state"] == "firing"] if not active.empty else active
    cards = [
        kpi(
            "Firing",
            str(len(firing)),
            tone="bad" if len(firing) else "good",
            detail="pages + tickets" if alerts.available() else "alerting not configured",
            id="kpi-firing",
        ),
        kpi(
            "Stale jobs",
            str(int(jobs["stale"].sum())) if not jobs.empty else "0",
            tone="bad" if not jobs.empty and jobs["stale"].any() else "good",
            detail="running, no heartbeat for 5m",
        ),
        kpi("Running", str(int((jobs["status"] == "running").sum())) if not jobs.empty else "0"),
    ]
    return (
        cards,
        _alert_table(active),
        _silence_options(active),
        table(
            jobs,
            ["job", "run_id", "model", "cluster", "status", "last_step", "heartbeat", "stale"],
            id="jobs-table",
            empty=common.NO_RUNS,
        ),
        _resolved_table(resolved),
    )


def _resolved_table(resolved: pd.DataFrame) -> Any:
    if resolved.empty:
        return html.Div(
            f"nothing resolved in the last {RESOLVED_WINDOW_HOURS} h", className="empty",
            id="resolved-empty",
        )  # fmt: skip
    rows = [
        html.Tr(
            [
                html.Td(row.severity, className=f"sev-{row.severity}"),
                html.Td(row.alertname),
                html.Td(row.job),
                html.Td(row.run_id or ""),
                html.Td(common.format_time(row.starts_at)),
                html.Td(common.format_time(row.ends_at)),
                html.Td(row.summary),
                html.Td(html.A("runbook", href=row.runbook_url) if row.runbook_url else ""),
            ]
        )
        for row in _rows(resolved)
    ]
    header = html.Tr(
        [html.Th(h) for h in ("sev", "alert", "job", "run", "fired", "resolved", "summary", "")]
    )
    return html.Table(
        [html.Thead(header), html.Tbody(rows)], className="table", id="resolved-table"
    )


def _alert_table(active: pd.DataFrame) -> Any:
    if active.empty:
        return html.Div("nothing firing — all quiet", className="empty", id="alerts-empty")
    rows = [
        html.Tr(
            [
                html.Td(row.severity, className=f"sev-{row.severity}"),
                html.Td(row.alertname),
                html.Td(row.job),
                html.Td(row.state),
                html.Td(row.summary),
                html.Td(row.acknowledged_by or ""),
                html.Td(html.A("runbook", href=row.runbook_url) if row.runbook_url else ""),
                html.Td(
                    html.Button(
                        "Acknowledge",
                        id={"type": "ack", "fp": row.fingerprint},
                        className="secondary",
                    )
                ),
            ]
        )
        for row in _rows(active)
    ]
    header = html.Tr(
        [html.Th(h) for h in ("sev", "alert", "job", "state", "summary", "acked by", "", "")]
    )
    return html.Table([html.Thead(header), html.Tbody(rows)], className="table", id="alerts-table")


def _silence_options(active: pd.DataFrame) -> list[dict[str, str]]:
    return [
        {"label": f"{row.alertname} · {row.job}", "value": row.fingerprint} for row in _rows(active)
    ]


def _rows(frame: pd.DataFrame) -> list[Any]:
    return list(frame.itertuples(index=False))


@callback(
    Output("silence-result", "children"),
    Input("silence-submit", "n_clicks"),
    Input({"type": "ack", "fp": ALL}, "n_clicks"),
    State("silence-target", "value"),
    State("silence-duration", "value"),
    State("silence-author", "value"),
    State("silence-comment", "value"),
    prevent_initial_call=True,
)
def act_on_alert(
    _: Any,
    __: Any,
    fingerprint: str | None,
    hours: int,
    author: str | None,
    comment: str | None,
) -> str:
    context = current()
    trigger = ctx.triggered_id
    who = (author or "").strip() or "on-call"
    if isinstance(trigger, dict) and trigger.get("type") == "ack":
        if not any(t["value"] for t in ctx.triggered):
            return dash.no_update  # type: ignore[return-value]
        alerts.acknowledge(context.engine, trigger["fp"], who)
        return f"acknowledged by {who}"
    if not fingerprint:
        return "pick an alert to silence"
    if not (comment or "").strip():
        return "a silence needs a comment — say why"
    active = alerts.active_alerts(context.engine)
    match = active[active["fingerprint"] == fingerprint]
    if match.empty:
        return "that alert is no longer active"
    row = match.iloc[0]
    matchers = {"alertname": str(row["alertname"]), "job": str(row["job"])}
    now = context.clock()
    alerts.create_silence(
        context.engine, matchers, now, now + timedelta(hours=int(hours)), who, str(comment).strip()
    )
    return f"silenced {row['alertname']} on {row['job']} for {hours}h"


@callback(
    Output("oncall-loss", "figure"),
    Output("oncall-nonfinite", "figure"),
    Output("oncall-gradnorm", "figure"),
    Output("oncall-efflr", "figure"),
    Output("oncall-share", "href"),
    Input("refresh", "n_intervals"),
    Input("oncall-run", "value"),
)
def refresh_run(_: int, run_id: str | None) -> tuple[Any, ...]:
    return run_figures(run_id)


@callback(
    Output("oncall-run", "options"),
    Input("refresh", "n_intervals"),
    State("oncall-query", "data"),
    prevent_initial_call=True,
)
def refresh_picker(_: int, query: dict[str, Any] | None) -> list[dict[str, str]]:
    """The picker's statuses follow the store, as the jobs table does."""
    context = current()
    return run_options(runs_for(context.engine, from_query(query or {}, context.clock())))


def run_figures(run_id: str | None) -> tuple[Any, ...]:
    """The on-call figures of one run (also what the benchmark times)."""
    context = current()
    run = queries.run(context.engine, run_id) if run_id else None
    if run is None:
        empty = common.empty_figure("", common.NO_RUNS)
        return empty, empty, empty, empty, "/oncall"
    run_pk = int(run["run_pk"])
    steps = queries.step_series(context.engine, run_pk, oncall.STEP_COLUMNS)
    shown = oncall.shown_steps(steps)
    vals = queries.validations(context.engine, [run_pk])
    raised = alerts.run_alerts(context.engine, run["run_id"])
    markers = oncall.alert_markers(
        raised, queries.steps_at(context.engine, run_pk, list(raised["starts_at"])), shown
    )
    return (
        oncall.training_figure(
            shown, vals, markers, title=f"Loss, gradient norm and LR — {run['job']} · {run_id}"
        ),
        oncall.nonfinite_figure(queries.nonfinite_totals(context.engine, run_pk)),
        oncall.grad_norm_histogram(steps["grad_norm"]),
        oncall.eff_lr_figure(
            queries.latest_layer_stats(context.engine, run_pk),
            queries.latest_histogram_exact(context.engine, run_pk),
        ),
        share_link("/oncall", job=run["job"], run=run["run_id"]),
    )
