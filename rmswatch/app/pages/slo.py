"""SLOs: error budget left, burn rate per window, time to exhaustion, the budget-burn chart and
the alerts each SLO raised — all as the alerting engine computes them for the server's config."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, callback, dcc, html

from rmswatch.alerting.evaluate import SLO_ALERTNAME, SLO_STEPS_ALERTNAME
from rmswatch.alerting.spec import format_duration
from rmswatch.app.components import empty_state, graph, kpi, share_link, table
from rmswatch.app.context import current
from rmswatch.app.slo_source import SloSnapshot
from rmswatch.app.views import common, slo
from rmswatch.store import queries as alert_queries

dash.register_page(__name__, path="/slo", name="SLOs", order=2, title="rmswatch · SLOs")  # type: ignore[no-untyped-call]


def layout(**query: Any) -> Any:
    snapshot = current().slo_snapshot()
    summary = slo.slo_summary(snapshot.table, snapshot.windows)
    options = [
        {"label": f"{r.slo} · {r.series}", "value": f"{r.slo}|{r.series}"}
        for r in summary.itertuples(index=False)
    ]
    wanted = f"{query.get('slo')}|{query.get('job')}"
    values = [o["value"] for o in options]
    value = wanted if wanted in values else (values[0] if values else None)
    return html.Div(
        [
            html.H1("Service level objectives"),
            html.P(
                "Numbers from the alert evaluator, with this server's config: budget left over "
                "each SLO's period, burn rate = error ratio / error budget (1x spends the budget "
                "exactly over the period).",
                className="note",
            ),
            html.Div(id="slo-summary", children=_summary(summary)),
            html.Div(
                [
                    dcc.Dropdown(
                        id="slo-pick",
                        options=options,
                        value=value,
                        clearable=False,
                        className="picker wide",
                    ),
                    html.A("link to this view", id="slo-share", className="share"),
                ],
                className="controls",
            ),  # fmt: skip
            html.Div(id="slo-detail"),
        ]
    )


@callback(
    Output("slo-summary", "children"), Input("refresh", "n_intervals"), prevent_initial_call=True
)
def refresh(_: int) -> Any:
    snapshot = current().slo_snapshot()
    return _summary(slo.slo_summary(snapshot.table, snapshot.windows))


def _summary(summary: pd.DataFrame) -> Any:
    if summary.empty:
        return empty_state(common.NO_RUNS)
    shown = summary.assign(
        budget_left=[slo.budget_text(v) for v in summary["budget_left"]],
        burn_now=[slo.burn_text(v) for v in summary["burn_now"]],
    ).rename(columns=slo.SUMMARY_HEADERS)
    return table(shown, id="slo-table")


@callback(
    Output("slo-detail", "children"),
    Output("slo-share", "href"),
    Input("slo-pick", "value"),
    Input("refresh", "n_intervals"),
)
def detail(picked: str | None, _: int) -> tuple[Any, str]:
    context = current()
    if not picked:
        return empty_state(common.NO_RUNS), "/slo"
    name, _sep, series = picked.partition("|")
    return slo_detail(context.slo_snapshot(), name, series, context.engine), share_link(
        "/slo", slo=name, job=series
    )


def slo_detail(snapshot: SloSnapshot, name: str, series: str, engine: Any) -> Any:
    spec = snapshot.specs.get(name)
    if spec is None:
        return empty_state(f"no SLO named {name} in this server's config")
    windows = snapshot.windows[name]
    row = snapshot.table[(snapshot.table["slo"] == name) & (snapshot.table["key"] == series)]
    if row.empty:
        return empty_state(f"no events for {name} on {series} yet")
    numbers = row.iloc[0]
    left = float(numbers["budget_remaining"])
    fast = slo.fastest_window(windows)
    burn_now = float(numbers[f"burn_rate_{fast}"])
    now = snapshot.at.timestamp()
    raised = slo.alerts_for_slo(
        alert_queries.alerts_named(engine, [SLO_ALERTNAME, SLO_STEPS_ALERTNAME]), name
    )
    return [
        html.Div(
            [
                kpi(
                    "Error budget left",
                    slo.budget_text(left),
                    tone=slo.budget_tone(left),
                    detail=f"{int(numbers['bad_period'])} bad of "
                    f"{int(numbers['events_period'])} events · objective {spec.objective:g}%",
                    id="kpi-budget",
                ),
                kpi(
                    f"Burn rate ({fast})",
                    slo.burn_text(burn_now),
                    tone="bad" if burn_now > windows.windows[0].factor else "good",
                    detail=f"pages above {windows.windows[0].factor:g}x in both {fast} and "
                    f"{format_duration(windows.windows[0].short)}",
                ),
                kpi(
                    "Budget exhausted in",
                    slo.format_exhaustion(float(numbers["time_to_exhaustion_seconds"])),
                    tone="bad" if float(numbers["time_to_exhaustion_seconds"]) < 86400 else "good",
                    detail="at the current burn rate",
                ),
                kpi(
                    "Alerting",
                    "page"
                    if numbers["firing_page"]
                    else "ticket"
                    if numbers["firing_ticket"]
                    else "no",
                    tone="bad" if numbers["firing_page"] or numbers["firing_ticket"] else "good",
                ),
            ],
            className="kpis",
        ),
        html.Div(
            [
                html.Div(
                    graph(
                        "slo-burn",
                        slo.budget_burn_figure(slo.budget_burn(snapshot.counts, spec, now), spec),
                    ),
                    className="col",
                ),
                html.Div(
                    graph(
                        "slo-windows",
                        slo.burn_rate_figure(
                            slo.window_burns(snapshot.table, name, series, windows),
                            f"Burn rate per window — {name} · {series}",
                        ),
                    ),
                    className="col",
                ),
            ],
            className="row",
        ),
        html.H2(f"Alerts raised by {name}"),
        table(
            raised,
            ["severity", "alertname", "job", "run_id", "state", "starts_at", "summary"],
            id="slo-alerts",
            empty=f"{name} has raised no alerts",
        ),
    ]
