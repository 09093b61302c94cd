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
    daily = executive.gpu_spend_by_day(runs, context.config.cost.gpu_hour_usd)
    drift = executive.drift_kpi(queries.sli_samples(context.engine))
    cards = [*_retrain_cards(snapshot.table, spec, jobs)]
    cards += [
        kpi(
            "Avg val-loss delta",
            common.format_number(deltas["delta"].mean() if not deltas.empty else None),
            detail="final val loss vs the previous retrain (negative is better)",
        ),
        kpi(
            "GPU spend",
            f"${daily['spend_usd'].sum():,.2f}",
            detail=f"{daily['gpu_hours'].sum():.1f} GPU-hours",
        ),
        *_drift_cards(drift),
    ]
    objective = spec.objective_ratio if spec is not None else None
    return [
        html.Div(cards, className="kpis"),
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
        table(executive.compliance_table(snapshot.table, jobs), id="compliance-table"),
    ]


def _retrain_cards(table: pd.DataFrame, spec: SloSpec | None, jobs: list[str]) -> list[Any]:
    if spec is None:
        return [kpi("Retrain success", "—", detail=f"no SLO named {RETRAIN_SLO} configured")]
    rollup = executive.slo_rollup(table, spec, jobs)
    return [
        kpi(
            "Retrain success",
            common.format_percent(rollup.rate),
            tone="neutral" if not rollup.events else "good" if rollup.budget_left > 0 else "bad",
            detail=f"{rollup.events - rollup.bad}/{rollup.events} finished · SLO "
            f"{spec.objective:g}% over {format_duration(spec.period)}",
            id="kpi-success",
        ),
        kpi(
            "Retrain error budget left",
            slo_views.budget_text(rollup.budget_left),
            tone=slo_views.budget_tone(rollup.budget_left),
            id="kpi-budget",
        ),
    ]


def _drift_cards(drift: pd.DataFrame) -> list[Any]:
    if drift.empty:
        return [kpi("Model drift", "—", detail="no SLI samples yet — POST one to /api/v1/ingest")]
    return [
        kpi(
            f"{row.name} · {row.job}",
            common.format_number(row.value),
            detail=f"previous {common.format_number(row.previous)}",
        )
        for row in drift.head(3).itertuples(index=False)
    ]
