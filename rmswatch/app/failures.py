"""What a page shows when one of its callbacks raises: an error panel naming what failed.

`callback_failed` is the app-wide Dash `on_error` handler. Its return value takes the place of
the callback's outputs: a figure output becomes a figure whose text names the failure, a
`children` output an error panel, anything else is left as it was. The traceback goes to the
server log, so the panel and the log line name the same callback.
"""

from __future__ import annotations

import logging
from typing import Any

import plotly.graph_objects as go
from dash import callback_context, html, no_update

from rmswatch.app.views.common import RED, figure

log = logging.getLogger("rmswatch.app")

# Dash's own page router: its failure is the page layout's
PAGE_CONTENT_ID = "_pages_content"
ERROR_META = "rmswatch-error"  # figure.layout.meta of an error figure; browser tests look for it


def describe_output(output: dict[str, Any]) -> str:
    """`the page layout` for Dash's router, else `oncall-loss.figure`."""
    ident, prop = output.get("id"), output.get("property")
    if ident == PAGE_CONTENT_ID:
        return "the page layout"
    return f"{ident}.{prop}"


def error_text(what: str, exc: BaseException) -> str:
    return f"could not draw {what}: {type(exc).__name__}: {exc}"


def error_panel(what: str, exc: BaseException) -> Any:
    return html.Div(
        [
            html.Div(f"Error — could not draw {what}", className="error-title"),
            html.Pre(f"{type(exc).__name__}: {exc}", className="error-detail"),
            html.Div("the server log has the traceback", className="note"),
        ],
        className="error-panel",
        role="alert",
    )


def error_figure(what: str, exc: BaseException) -> go.Figure:
    fig = figure(f"Error — could not draw {what}", height=260)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(meta=ERROR_META)
    fig.add_annotation(
        text=f"{type(exc).__name__}: {exc}"[:300].replace("<", "&lt;").replace(">", "&gt;"),
        showarrow=False,
        font={"size": 14, "color": RED},
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
    )
    return fig


def value_for(output: dict[str, Any], exc: BaseException) -> Any:
    what = describe_output(output)
    if output.get("property") == "figure":
        return error_figure(what, exc)
    if output.get("property") == "children":
        return error_panel(what, exc)
    return no_update


def callback_failed(exc: Exception) -> Any:
    """Dash `on_error`: log the failure and put an error in place of every output it had."""
    outputs = callback_context.outputs_list
    listed = outputs if isinstance(outputs, list) else [outputs]
    names = ", ".join(describe_output(o) for o in listed if isinstance(o, dict)) or "a callback"
    log.error("callback for %s failed", names, exc_info=exc)
    if isinstance(outputs, list):
        return [
            [value_for(o, exc) for o in item] if isinstance(item, list) else value_for(item, exc)
            for item in outputs
        ]
    return value_for(outputs, exc)
