"""Small Dash building blocks shared by the pages: KPI cards, tables, pickers, empty states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from dash import dcc, html


def kpi(label: str, value: str, *, tone: str = "neutral", detail: str = "", id: str = "") -> Any:
    """A big number with its label; `tone` is good, bad, warn or neutral."""
    props: dict[str, Any] = {"className": f"kpi kpi-{tone}"}
    if id:
        props["id"] = id
    return html.Div(
        [
            html.Div(label, className="kpi-label"),
            html.Div(value, className="kpi-value"),
            html.Div(detail, className="kpi-detail"),
        ],
        **props,
    )


def table(
    frame: pd.DataFrame, columns: Sequence[str] | None = None, *, id: str = "", empty: str = ""
) -> Any:
    """An HTML table (text is escaped by React, so labels from jobs are shown, never run)."""
    columns = list(columns or frame.columns)
    if frame.empty:
        return html.Div(empty or "nothing here yet", className="empty")
    header = html.Thead(html.Tr([html.Th(c) for c in columns]))
    body = html.Tbody(
        [html.Tr([html.Td(_cell(row[c])) for c in columns]) for _, row in frame.iterrows()]
    )
    props: dict[str, Any] = {"className": "table"}
    if id:
        props["id"] = id
    return html.Table([header, body], **props)


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return "—"  # a missing number (NaN) reads as missing, not as "nan"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or (not isinstance(value, list | dict) and pd.isna(value)):
        return "—"
    return str(value)


def empty_state(message: str) -> Any:
    return html.Div(message, className="empty-state")


def graph(id: str, figure: Any = None) -> Any:
    return dcc.Graph(id=id, figure=figure or {}, config={"displaylogo": False})


def run_options(runs: pd.DataFrame) -> list[dict[str, str]]:
    """`job · run · status` per run; pages refresh these with the jobs table, so the picker
    never says "running" about a run the table already shows as ended."""
    return [
        {"label": f"{r.job} · {r.run_id} · {r.status}", "value": str(r.run_id)}
        for r in runs.itertuples(index=False)
    ]


def run_picker(id: str, runs: pd.DataFrame, value: str | None) -> Any:
    return dcc.Dropdown(
        id=id, options=run_options(runs), value=value, clearable=False, className="picker"
    )


def share_link(path: str, **query: str | None) -> str:
    params = {k: v for k, v in query.items() if v}
    return path + (f"?{urlencode(params)}" if params else "")
