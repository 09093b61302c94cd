"""The views that lead an on-call engineer to the cause: LR next to loss and gradients, markers
for what a log axis can't draw, the failing layer first, a timeline of what happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.app import failures
from rmswatch.app.views import common, debug, oncall, postmortem

T0 = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC))


def _steps(n: int = 40, **columns: Any) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "step": range(1, n + 1),
            "loss": np.linspace(2.0, 1.0, n),
            "grad_norm": np.linspace(1.0, 0.5, n),
            "lrs": [[1e-3, 1e-4]] * n,
        }
    )
    for name, values in columns.items():
        frame[name] = values
    return frame


def _traces(fig: go.Figure) -> dict[str, Any]:
    return {trace.name: trace for trace in fig.data}


def test_lr_is_one_column_per_param_group_and_falls_back_to_lr() -> None:
    assert list(oncall.lr_columns(_steps(3)).columns) == ["step", "lr group 0", "lr group 1"]
    old_store = pd.DataFrame({"step": [1, 2], "lr": [0.1, 0.1]})
    assert oncall.lr_columns(old_store)["lr group 0"].tolist() == [0.1, 0.1]


def test_a_hand_made_lr_jump_is_found_and_a_smooth_schedule_is_not() -> None:
    smooth = [[1e-3 * 0.99**i] for i in range(30)]
    raised = [[1e-3]] * 10 + [[4e-3]] * 20
    assert oncall.lr_changes(oncall.lr_columns(_steps(30, lrs=smooth))).empty
    found = oncall.lr_changes(oncall.lr_columns(_steps(30, lrs=raised)))
    assert found[["step", "group", "before", "after"]].values.tolist() == [
        [11, "group 0", 1e-3, 4e-3]
    ]


def test_the_training_figure_puts_loss_grad_norm_and_every_lr_group_on_one_step_axis() -> None:
    lrs = [[1e-3, 1e-4]] * 20 + [[1e-1, 1e-4]] * 20
    skipped = [False] * 40
    skipped[5] = True
    fig = oncall.training_figure(
        _steps(40, lrs=lrs, skipped=skipped, grad_norm_before_clip=np.linspace(3, 2, 40)),
        pd.DataFrame(columns=["step", "value"]),
    )
    traces = _traces(fig)
    assert {"training loss", "lr group 0", "lr group 1", "LR changed", "skipped AMP step",
            "grad norm before clipping", "grad norm (after clipping)"} <= set(traces)  # fmt: skip
    assert list(traces["LR changed"].x) == [21]
    assert list(traces["skipped AMP step"].x) == [6]
    assert fig.layout.xaxis.matches == fig.layout.xaxis2.matches == "x3"  # one step axis
    assert traces["lr group 0"].xaxis == "x3" and traces["training loss"].xaxis == "x"


def test_zero_and_nonfinite_values_are_markers_not_gaps() -> None:
    grad = np.ones(40)
    grad[10] = 0.0
    grad[30] = np.inf
    grad[:5] = 1e-6  # spans decades: a log axis
    fig = oncall.training_figure(_steps(40, grad_norm=grad), pd.DataFrame(columns=["step"]))
    traces = _traces(fig)
    assert list(traces["grad norm = 0"].x) == [11]
    assert list(traces["grad norm NaN/Inf"].x) == [31]
    assert fig.layout.yaxis2.type == "log"


def test_log_ticks_stay_readable_over_thirty_decades() -> None:
    axis = common.log_axis([1e-3, 1e32])
    assert axis["type"] == "log" and axis["exponentformat"] == "power"
    assert 35 / axis["dtick"] <= common.LOG_TICKS


def test_symlog_keeps_sign_and_order_either_side_of_zero() -> None:
    values = np.array([-1e6, -1.0, 0.0, 0.5, 3e29])
    scaled = common.symlog(values, linthresh=0.01)
    assert scaled[2] == 0 and list(np.argsort(scaled)) == [0, 1, 2, 3, 4]
    ticks, texts = common.symlog_ticks(values, 0.01)
    assert "0" in texts and any(t.startswith("-") for t in texts) and len(ticks) == len(texts)


def test_a_run_without_nonfinite_values_says_so_instead_of_flat_bars() -> None:
    fig = oncall.nonfinite_figure({"grad": 0, "param": 0, "state": 0, "loss": 0})
    assert not fig.data
    assert "no NaN/Inf" in fig.layout.annotations[0].text
    assert oncall.nonfinite_figure({"grad": 3, "param": 0, "state": 0, "loss": 0}).data


def test_sampled_layers_are_drawn_apart_from_exact_ones() -> None:
    layers = pd.DataFrame(
        {"layer": ["a", "b"], "eff_lr_min": [1e-5, 1e-5], "eff_lr_p50": [1e-4, 1e-4],
         "eff_lr_p95": [1e-3, 1e-3], "eff_lr_max": [1e-2, 1e-2], "eff_lr_mean": [1e-4, 1e-4]}
    )  # fmt: skip
    traces = _traces(oncall.eff_lr_figure(layers, {"a": True, "b": False}))
    assert list(traces["exact"].y) == ["a"]
    assert list(traces["estimated from a sample"].y) == ["b"]


def test_the_debug_page_opens_on_the_first_nonfinite_layer() -> None:
    first_bad = {"step": 61, "layers": [("fc.weight", 3), ("conv1.weight", 1)]}
    assert debug.failing_layer(first_bad, pd.DataFrame()) == "fc.weight"


def test_without_nonfinite_values_it_opens_on_the_layer_that_diverged_first() -> None:
    steps = list(range(1, 41))
    rows = [(s, "conv1.weight", 1.0) for s in steps]
    rows += [(s, "fc.weight", 1.0 if s < 30 else 1e4) for s in steps]
    rows += [(s, "fc.bias", 1.0 if s < 35 else 1e6) for s in steps]
    matrix = pd.DataFrame(rows, columns=["step", "layer", "value"])
    assert debug.failing_layer(None, matrix) == "fc.weight"
    healthy = matrix[matrix["layer"] == "conv1.weight"]
    assert debug.failing_layer(None, healthy) is None


def test_layer_names_are_text_in_every_figure_not_markup() -> None:
    name = '<a href="http://x">fc.weight</a><b>'
    matrix = pd.DataFrame({"step": [1, 2], "layer": [name, name], "value": [1e-3, 0.0]})
    fig = debug.eff_lr_heatmap(matrix)
    assert all("<a" not in str(y) and "&lt;a" in str(y) for y in fig.data[0].y)
    assert _traces(fig)["eff. LR = 0"].x == (2,)
    series = debug.layer_series_figure(
        pd.DataFrame({"step": [1, 2], "grad_norm": [0.0, 1.0], "update_ratio": [1e-3, 1e-3]}), name
    )
    assert "<a" not in series.layout.title.text and "&lt;a" in series.layout.title.text
    assert list(_traces(series)["grad norm = 0"].x) == [1]


def test_the_timeline_has_every_firing_with_its_value_then_and_one_row_per_lr_burst() -> None:
    times = [T0 + timedelta(seconds=s) for s in range(1, 101)]
    step_times = pd.DataFrame({"step": range(1, 101), "time": times})
    run = {"started_at": T0, "ended_at": T0 + timedelta(seconds=101), "status": "succeeded",
           "last_step": 100, "resumed_from_step": None}  # fmt: skip
    firings = pd.DataFrame(
        {"time": [T0 + timedelta(seconds=s) for s in (50.5, 60.5, 70.5, 80.5)],
         "fingerprint": "f", "alertname": "TrainingLossDivergence", "severity": "page",
         "to_state": ["firing", "resolved", "firing", "resolved"], "value": [9.0, 1.0, 12.0, 1.0],
         "detail": ""}
    )  # fmt: skip
    changes = pd.DataFrame(
        {"step": [40, 42, 44, 90], "group": "group 0",
         "before": [1e-3, 4e-3, 1.6e-2, 6.4e-2], "after": [4e-3, 1.6e-2, 6.4e-2, 1e-3]}
    )  # fmt: skip
    events = postmortem.timeline(
        run, pd.DataFrame(), pd.DataFrame(columns=["step", "loss", "median"]), None,
        pd.DataFrame(columns=["step", "time", "action", "ok", "detail", "seconds"]), None,
        step_times, firings=firings, lr_changes=changes,
    )  # fmt: skip
    assert events["kind"].tolist() == [
        "run", "LR changed", "alert fired", "alert resolved", "alert fired", "alert resolved",
        "LR changed", "run",
    ]  # fmt: skip
    assert "raised 3 times, steps 40–44: 0.001 → 0.064 (×64)" in events["what"].iloc[1]
    assert "fired at value 9" in events["what"].iloc[2]
    assert "fired at value 12" in events["what"].iloc[4]
    assert events["what"].iloc[-1] == "run ended — verdict: succeeded with incident"


def test_a_resumed_run_says_where_it_resumed_from() -> None:
    run = {"started_at": T0, "ended_at": None, "status": "running", "resumed_from_step": 500}
    events = postmortem.timeline(
        run, pd.DataFrame(), pd.DataFrame(columns=["step", "loss", "median"]), None,
        pd.DataFrame(columns=["step", "time", "action", "ok", "detail", "seconds"]),
    )  # fmt: skip
    assert events["what"].iloc[0] == "run started (resumed from step 500)"


def test_the_verdict_prefers_the_stores_and_words_a_failure_with_its_detail() -> None:
    empty = pd.DataFrame(columns=["to_state", "severity"])
    assert postmortem.run_verdict({"status": "succeeded", "verdict": "succeeded"}, empty) == (
        "succeeded"
    )
    assert postmortem.run_verdict({"status": "failed", "status_detail": "OOM"}, empty) == (
        "failed: OOM"
    )
    ticket = pd.DataFrame({"to_state": ["firing"], "severity": ["ticket"]})
    assert postmortem.run_verdict({"status": "succeeded"}, ticket) == "succeeded"


def test_a_failed_figure_output_becomes_a_figure_naming_the_output_and_error() -> None:
    error = ValueError("no such column <b>x</b>")
    fig = failures.value_for({"id": "oncall-loss", "property": "figure"}, error)
    assert fig.layout.meta == failures.ERROR_META
    assert "oncall-loss.figure" in fig.layout.title.text
    assert "&lt;b&gt;" in fig.layout.annotations[0].text
    panel = failures.value_for({"id": "_pages_content", "property": "children"}, error)
    assert "the page layout" in str(panel.children[0].children)


def test_layers_whose_effective_lr_went_nonfinite_are_named_not_drawn_as_empty_rows() -> None:
    layers = pd.DataFrame(
        {"layer": ["a", "b"], "eff_lr_min": [1e-5, np.nan], "eff_lr_p50": [1e-4, np.nan],
         "eff_lr_p95": [1e-3, np.nan], "eff_lr_max": [1e-2, np.inf], "eff_lr_mean": [1e-4, 1.0]}
    )  # fmt: skip
    fig = oncall.eff_lr_figure(layers)
    assert "NaN/Inf, not drawn: b" in fig.layout.title.text
    assert list(_traces(fig)["exact"].y) == ["a"]
    gone = oncall.eff_lr_figure(layers.iloc[1:])
    assert not gone.data and "no finite effective LR" in gone.layout.annotations[0].text
