"""Executive: retrain success against its SLO, validation gains, GPU spend, drift, compliance."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, callback, dcc, html

from rmswatch.alerting.spec import SloSpec, format_duration
from rmswatch.app.components import empty_state, graph, kpi, table
from rmswatch.app.context import current
from rmswatch.app.selection import Selection, from_query, runs_for
from rmswatch.app.views import common, executive
from rmswatch.app.views import slo as slo_views
from rmswatch.store import queries

dash.register_page(
    __name__, path="/executive", name="Executive", order=1, title="rmswatch · executive"
)  # type: ignore[no-untyped-call]

RETRAIN_SLO = "retrain-success"


def layout(**query: Any) -> Any:
    selection = from_query(query)
    return html.Div(
        [
            html.H1("Executive summary"),
            dcc.Store(id="exec-selection", data=dict(query)),
            html.Div(id="exec-body", children=body(selection)),
        ]
    )


@callback(
    Output("exec-body", "children"),
    Input("refresh", "n_intervals"),
    Input("exec-selection", "data"),
    prevent_initial_call=True,
)
def refresh(_: int, query: dict[str, Any] | None) -> Any:
    return body(from_query(query or {}))


def body(selection: Selection) -> Any:
    context = current()
    runs = runs_for(context.engine, selection)
    if selection.job:
        runs = runs[runs["job"] == selection.job]
    if runs.empty:
        return empty_state(common.NO_RUNS)
    snapshot = context.slo_snapshot()
    jobs = sorted(runs["job"].unique())
    spec = snapshot.specs.get(RETRAIN_SLO)
    deltas = executive.validation_delta_per_run(
        runs, queries.validations(context.engine, [int(pk) for pk in runs["run_pk"]])
    )
    summary = executive.delta_summary(deltas)
    events = queries.alert_history(
        context.engine, since=pd.Timestamp(runs["started_at"].min()).to_pydatetime()
    )
    incidents = executive.incident_run_ids(runs, events)
    daily = executive.gpu_spend_by_day(runs, context.config.cost.gpu_hour_usd)
    cards = [*_retrain_cards(snapshot.table, spec, jobs), _outcome_card(runs, incidents)]
    cards += [
        kpi(
            "Val-loss change per retrain (median)",
            common.format_number(summary.median, 3) if summary.compared else "—",
            tone="neutral" if not summary.compared else "good" if summary.median <= 0 else "warn",
            detail=summary.sentence(),
            id="kpi-valdelta",
        ),
        kpi(
            "GPU spend",
            f"${daily['spend_usd'].sum():,.2f}",
            detail=f"{daily['gpu_hours'].sum():.1f} GPU-hours in the runs shown"
            + ("" if daily["gpu_hours"].sum() else " (these runs trained on the CPU)"),
        ),
        *_drift_cards(executive.drift_cards(queries.sli_samples(context.engine))),
    ]
    objective = spec.objective_ratio if spec is not None else None
    return [
        html.Div(cards, className="kpis"),
        html.P(
            [
                "What these numbers mean and where they come from: ",
                html.A("help", href="/help", id="exec-help"),
            ],
            className="note",
        ),
        html.H2("Retrains by job"),
        table(executive.job_rows(runs, deltas, incidents), id="jobs-summary"),
        html.Div(
            [
                html.Div(
                    graph("exec-success", executive.success_trend_figure(runs, objective)),
                    className="col",
                ),
                html.Div(graph("exec-spend", executive.spend_figure(daily)), className="col"),
            ],
            className="row",
        ),
        graph("exec-valdelta", executive.validation_delta_figure(deltas)),
        html.H2("SLO compliance by job (error budget left over each SLO's period)"),
        table(
            executive.compliance_table(snapshot.table, jobs, snapshot.specs),
            id="compliance-table",
        ),
    ]


def _outcome_card(runs: pd.DataFrame, incidents: set[str]) -> Any:
    ok = runs["status"] == "succeeded"
    with_incident = runs["run_id"].astype(str).isin(incidents)
    running = runs["status"].isin(executive.STILL_RUNNING)
    failed = int((~ok & ~running).sum())
    clean, rough = int((ok & ~with_incident).sum()), int((ok & with_incident).sum())
    words = f"{clean} succeeded, {rough} succeeded with incident, {failed} failed"
    if running.any():
        words += f", {int(running.sum())} running"
    return kpi(
        "Retrains",
        str(len(runs)),
        tone="bad" if failed else "warn" if rough else "good",
        detail=words + (" — read their postmortems" if failed or rough else ""),
        id="kpi-outcomes",
    )


def _retrain_cards(table: pd.DataFrame, spec: SloSpec | None, jobs: list[str]) -> list[Any]:
    if spec is None:
        return [kpi("Retrain success", "—", detail=f"no SLO named {RETRAIN_SLO} configured")]
    rollup = executive.slo_rollup(table, spec, jobs)
    left = rollup.budget_left
    advice = (
        "no finished retrains in the period yet"
        if not rollup.events
        else "spent: more retrains failed than the SLO allows — pause risky changes"
        if left < 0
        else "under a quarter left — be careful with risky changes"
        if left < 0.25
        else "plenty left"
    )
    return [
        kpi(
            "Retrain success",
            common.format_percent(rollup.rate),
            tone="neutral" if not rollup.events else "good" if left > 0 else "bad",
            detail=f"{rollup.events - rollup.bad} of {rollup.events} finished retrains "
            f"succeeded; the goal is {spec.objective:g}% over {format_duration(spec.period)}",
            id="kpi-success",
        ),
        kpi(
            "Retrain error budget left",
            slo_views.budget_text(left),
            tone=slo_views.budget_tone(left),
            detail=f"the failures the SLO allows in the period: {advice}",
            id="kpi-budget",
        ),
    ]


def _drift_cards(cards: list[executive.DriftCard]) -> list[Any]:
    if not cards:
        return [
            kpi(
                "Model drift",
                "no data",
                detail="no production samples reported yet (see help)",
                id="kpi-drift",
            )
        ]
    return [kpi(card.title, card.value, tone=card.tone, detail=card.sentence) for card in cards]
