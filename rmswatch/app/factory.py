"""Builds the Dash app: pages from `pages/`, nav from the page registry, auto-refresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash
import flask
from dash import Dash, Input, Output, dcc, html

from rmswatch.app import alerts
from rmswatch.app.context import AppContext, attach, current
from rmswatch.app.failures import callback_failed

HERE = Path(__file__).resolve().parent
NAV_ORDER = ("/oncall", "/executive", "/slo", "/debug", "/postmortem")


def create_app(context: AppContext, *, server: flask.Flask | None = None) -> Dash:
    """A Dash app over `context` (engine, config, clock), on `server` or a new Flask app."""
    flask_server = server or flask.Flask("rmswatch")
    attach(flask_server, context)
    app = Dash(
        "rmswatch.app",
        server=flask_server,  # type: ignore[arg-type]  # Dash accepts a Flask app
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        title="rmswatch",
        update_title=None,  # type: ignore[arg-type]  # None: keep the title while updating
        suppress_callback_exceptions=True,
        # a failing callback shows an error panel naming it, never a blank panel
        on_error=callback_failed,
    )
    app.layout = _layout(context)
    _register_shell_callbacks(app)

    @flask_server.before_request
    def _front_door() -> Any:
        # `/` leads to the on-call view while something is firing, else to the executive view
        if flask.request.path == "/":
            return flask.redirect(landing_path(current()), code=302)
        return None

    return app


def landing_path(context: AppContext) -> str:
    frame = alerts.active_alerts(context.engine)
    firing = not frame.empty and bool((frame["state"] == "firing").any())
    return "/oncall" if firing else "/executive"


def nav_pages() -> list[dict[str, Any]]:
    pages = [p for p in dash.page_registry.values() if p["path"] in NAV_ORDER]
    return sorted(pages, key=lambda p: NAV_ORDER.index(p["path"]))


def _layout(context: AppContext) -> Any:
    refresh_ms = int(context.config.server.refresh_seconds * 1000)
    links = [
        dcc.Link(page["name"], href=page["relative_path"], id=f"nav-{page['path'].strip('/')}")
        for page in nav_pages()
    ]
    return html.Div(
        [
            dcc.Location(id="shell-location"),
            html.Div(
                [
                    html.Span("rmswatch", className="brand"),
                    *links,
                    html.Span(id="firing-banner", className="quiet"),
                ],
                className="nav",
            ),
            dcc.Interval(id="refresh", interval=refresh_ms, n_intervals=0),
            html.Div(dash.page_container, className="page"),
        ]
    )


def _register_shell_callbacks(app: Dash) -> None:
    @app.callback(
        Output("firing-banner", "children"),
        Output("firing-banner", "className"),
        Input("refresh", "n_intervals"),
    )
    def _banner(_: int) -> tuple[str, str]:
        frame = alerts.active_alerts(current().engine)
        firing = frame[frame["state"] == "firing"] if not frame.empty else frame
        if firing.empty:
            return ("nothing firing" if alerts.available() else "alerting not configured"), "quiet"
        return f"{len(firing)} alert(s) firing", "firing"

    @app.callback(
        *(Output(f"nav-{p.strip('/')}", "className") for p in NAV_ORDER),
        Input("shell-location", "pathname"),
    )
    def _active_link(pathname: str | None) -> tuple[str, ...]:
        return tuple("active" if pathname == p else "" for p in NAV_ORDER)
