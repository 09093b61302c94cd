"""The Grafana JSON model the dashboards are written in: queries, panels, variables, layout.

`sel` builds a selector for a catalogue metric (and refuses a series the exporter does not
serve); `dashboard` lays panels out left to right on Grafana's 24-column grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rmswatch import catalogue as cat

SCHEMA_VERSION = 39  # Grafana 10.4
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUN = 'job=~"$job", run_id=~"$run_id"'


def sel(spec: cat.MetricSpec, suffix: str = "", extra: str = "") -> str:
    """`metric{job=~"$job", run_id=~"$run_id", ...}` for a catalogue metric."""
    name = spec.name + suffix
    if name not in cat.sample_names():
        raise ValueError(f"{name!r} is not a series in rmswatch.catalogue")
    return f"{name}{{{RUN}{', ' + extra if extra else ''}}}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    heatmap: bool = False
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries | stat | heatmap | table
    queries: Sequence[Query]
    description: str = ""
    unit: str = "short"
    width: int = 12
    height: int = 8
    log_scale: bool = False
    thresholds: Sequence[tuple[float, str]] = ()
    options: dict[str, Any] = field(default_factory=dict)


def _target(query: Query, ref: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "instant": query.instant,
        "refId": ref,
    }
    if query.heatmap:
        target["format"] = "heatmap"
        target["legendFormat"] = "{{le}}"
    return target


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": color, "value": None if i == 0 else value}
                for i, (value, color) in enumerate(panel.thresholds)
            ],
        }
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "spanNulls": False,
            "scaleDistribution": {"type": "log", "log": 10}
            if panel.log_scale
            else {"type": "linear"},
        }
    by_kind: dict[str, dict[str, Any]] = {
        "timeseries": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "stat": {
            "colorMode": "background",
            "graphMode": "area",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        "heatmap": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Spectral", "steps": 64},
            "yAxis": {"axisPlacement": "left", "unit": panel.unit},
            "rowsFrame": {"layout": "le"},
            "tooltip": {"show": True, "yHistogram": True},
        },
        "table": {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]},
    }
    options = {**by_kind[panel.kind], **panel.options}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def _variables(extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    def query_var(name: str, definition: str) -> dict[str, Any]:
        return {
            "type": "query",
            "name": name,
            "label": name,
            "datasource": DATASOURCE,
            "definition": definition,
            "query": {"query": definition, "refId": f"{name}-values", "qryType": 1},
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
        }

    return {
        "list": [
            {
                "type": "datasource",
                "name": "datasource",
                "label": "Prometheus",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
            },
            query_var("job", f"label_values({cat.RUN_INFO.name}, job)"),
            query_var("run_id", f'label_values({cat.RUN_INFO.name}{{job=~"$job"}}, run_id)'),
            *extra,
        ]
    }


def dashboard(
    uid: str, title: str, description: str, panels: Sequence[Panel], **kw: Any
) -> dict[str, Any]:
    laid_out, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(_panel(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["rmswatch", "generated"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": _variables(kw.get("variables", ())),
        "panels": laid_out,
    }
