"""SLOs: error budget left, burn rate per window, the budget-burn chart and the alerts raised."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, callback, html

from rmswatch.app import alerts
from rmswatch.app.components import empty_state, graph, kpi, table
from rmswatch.app.context import current
from rmswatch.app.views import common, slo
from rmswatch.store.queries import views as queries

dash.register_page(__name__, path="/slo", name="SLOs", order=2, title="rmswatch · SLOs")

RETRAIN_SLO = "retrain-success"


def layout(**query: Any) -> Any:
    return html.Div([html.H1("Service level objectives"), html.Div(id="slo-body", children=body())])


@callback(
    Output("slo-body", "children"), Input("refresh", "n_intervals"), prevent_initial_call=True
)
def refresh(_: int) -> Any:
    return body()


def body() -> Any:
    context = current()
    runs = queries.runs(context.engine)
    if runs.empty:
        return empty_state(common.NO_RUNS)
    objective = context.slo_objective(RETRAIN_SLO)
    burn = slo.retrain_budget_burn(runs, objective)
    left = float(burn["budget_left"].iloc[-1]) if not burn.empty else 1.0
    configured = pd.DataFrame(
        [{"slo": s.name, "objective": s.objective} for s in context.config.slos]
    )
    raised = alerts.active_alerts(context.engine)
    return [
        html.Div(
            [
                kpi(
                    f"{RETRAIN_SLO} budget left",
                    common.format_percent(left),
                    tone="good" if left > 0.25 else "warn" if left > 0 else "bad",
                    detail=f"objective {common.format_percent(objective)}",
                    id="kpi-budget",
                )
            ],
            className="kpis",
        ),
        graph("slo-burn", slo.budget_burn_figure(burn, RETRAIN_SLO)),
        html.H2("Configured SLOs"),
        table(
            configured,
            id="slo-table",
            empty="no SLOs configured — add slos: to the config file (see docs/alerting.md)",
        ),
        html.H2("Alerts raised"),
        table(
            raised,
            ["severity", "alertname", "job", "state", "starts_at", "summary"],
            id="slo-alerts",
            empty="no alerts raised",
        ),
    ]
