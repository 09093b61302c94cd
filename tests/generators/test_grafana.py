from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from rmswatch import catalogue as cat
from rmswatch.generators import grafana
from tests.helpers import REPO_ROOT

FOLDER = REPO_ROOT / "dashboards" / "grafana"
METRIC = re.compile(r"\brmswatch_[a-z0-9_]+")


def expressions(board: dict[str, Any]) -> Iterator[str]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield target["expr"]


@pytest.mark.parametrize("name", sorted(grafana.DASHBOARDS))
def test_checked_in_dashboard_is_current(name: str) -> None:
    path = FOLDER / f"{name}.json"
    assert path.read_text(encoding="utf-8") == grafana.render(name), (
        f"{path} is stale: run `python -m rmswatch.generators.grafana --write dashboards/grafana`"
    )


@pytest.mark.parametrize("name", sorted(grafana.DASHBOARDS))
def test_every_panel_query_names_only_catalogue_metrics(name: str) -> None:
    board = json.loads((FOLDER / f"{name}.json").read_text(encoding="utf-8"))
    known = cat.sample_names()
    for expr in expressions(board):
        named = set(METRIC.findall(expr))
        assert named, f"a query with no rmswatch metric: {expr}"
        assert named <= known, f"not in the catalogue: {named - known} in {expr}"


@pytest.mark.parametrize("name", sorted(grafana.DASHBOARDS))
def test_dashboards_use_the_datasource_job_and_run_variables(name: str) -> None:
    board = json.loads((FOLDER / f"{name}.json").read_text(encoding="utf-8"))
    assert board["schemaVersion"] >= 36  # Grafana 10+
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "run_id"} <= set(variables)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    for expr in expressions(board):
        assert 'job=~"$job"' in expr and 'run_id=~"$run_id"' in expr, expr


def test_the_debug_dashboard_draws_the_distributions_as_heatmaps() -> None:
    board = grafana.debug()
    heatmaps = [p for p in board["panels"] if p["type"] == "heatmap"]
    exprs = {t["expr"] for p in heatmaps for t in p["targets"]}
    assert any(cat.STATE_RMS.name + "_bucket" in e for e in exprs)
    assert any(cat.EFFECTIVE_LR.name + "_bucket" in e for e in exprs)
    assert all(t["format"] == "heatmap" for p in heatmaps for t in p["targets"])


def test_a_query_naming_an_unknown_metric_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="not a series"):
        grafana.sel(cat.STEPS_TOTAL, "_bucket")


def test_check_mode_reports_a_stale_folder(tmp_path: Any) -> None:
    assert grafana.main(["--check", str(tmp_path)]) == 1
    assert grafana.main(["--write", str(tmp_path)]) == 0
    assert grafana.main(["--check", str(tmp_path)]) == 0
