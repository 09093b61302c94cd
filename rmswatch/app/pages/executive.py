"""Executive: retrain success against its SLO, validation gains, GPU spend, drift, compliance."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, callback, dcc, html

from rmswatch.app.components import empty_state, graph, kpi, table
from rmswatch.app.context import current
from rmswatch.app.selection import Selection, from_query, runs_for
from rmswatch.app.views import common, executive
from rmswatch.store.queries import views as queries

dash.register_page(
    __name__, path="/executive", name="Executive", order=1, title="rmswatch · executive"
)

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
    objective = context.slo_objective(RETRAIN_SLO)
    success = executive.retrain_success(runs, objective)
    deltas = executive.validation_delta_per_run(
        runs, queries.validations(context.engine, [int(pk) for pk in runs["run_pk"]])
    )
    daily = executive.gpu_spend_by_day(runs, context.config.cost.gpu_hour_usd)
    drift = executive.drift_kpi(queries.sli_samples(context.engine))
    budget = success.budget_remaining
    cards = [
        kpi(
            "Retrain success",
            common.format_percent(success.rate),
            tone="good" if success.rate >= objective else "bad",
            detail=f"{success.succeeded}/{success.finished} finished · SLO "
            f"{common.format_percent(objective)}",
            id="kpi-success",
        ),
        kpi(
            "Error budget left",
            common.format_percent(budget),
            tone="good" if budget > 0.25 else "warn" if budget > 0 else "bad",
        ),
        kpi(
            "Avg val-loss delta",
            common.format_number(deltas["delta"].mean() if not deltas.empty else None),
            detail="per retrain (negative is better)",
        ),
        kpi(
            "GPU spend",
            f"${daily['spend_usd'].sum():,.2f}",
            detail=f"{daily['gpu_hours'].sum():.1f} GPU-hours",
        ),
        *_drift_cards(drift),
    ]
    compliance = _compliance(runs, objective)
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
        html.H2("SLO compliance by job"),
        table(compliance, id="compliance-table"),
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


def _compliance(runs: pd.DataFrame, objective: float) -> pd.DataFrame:
    rows = []
    for job, group in runs.groupby("job"):
        rate = executive.retrain_success(group, objective)
        rows.append(
            {
                "job": job,
                "runs": len(group),
                "finished": rate.finished,
                "success": common.format_percent(rate.rate),
                "objective": common.format_percent(objective),
                "budget left": common.format_percent(rate.budget_remaining),
                "meets SLO": "yes"
                if rate.finished and rate.rate >= objective
                else ("—" if not rate.finished else "NO"),
            }
        )
    return pd.DataFrame(rows)
