"""View functions: pandas in, the numbers and figures a person reads out."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd

from rmswatch.app.views import executive, oncall, postmortem
from rmswatch.app.views.common import empty_figure

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _runs(statuses: list[str], job: str = "j") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_pk": range(len(statuses)),
            "run_id": [f"r{i}" for i in range(len(statuses))],
            "job": job,
            "status": statuses,
            "started_at": [NOW - timedelta(hours=len(statuses) - i) for i in range(len(statuses))],
            "ended_at": [
                NOW - timedelta(hours=len(statuses) - i - 0.5) for i in range(len(statuses))
            ],
            "last_step_at": [NOW - timedelta(minutes=30)] * len(statuses),
            "last_step": 10,
            "gpu_seconds": 3600.0,
        }
    )


def test_spend_is_gpu_hours_times_the_configured_price() -> None:
    daily = executive.gpu_spend_by_day(_runs(["succeeded", "succeeded"]), gpu_hour_usd=2.5)
    assert daily["gpu_hours"].sum() == 2.0 and daily["spend_usd"].sum() == 5.0


def test_validation_delta_compares_each_retrain_with_the_previous_succeeded_one() -> None:
    runs = _runs(["succeeded", "failed", "succeeded"])
    vals = pd.DataFrame(
        {
            "run_pk": [0, 0, 1, 2, 2],
            "step": [10, 20, 20, 10, 20],
            "value": [2.0, 1.2, 9e12, 1.5, 1.0],  # the failed run blew up; it shipped nothing
        }
    )
    deltas = executive.validation_delta_per_run(runs, vals)
    assert deltas["run_id"].tolist() == ["r2"]
    assert deltas["previous_run_id"].tolist() == ["r0"]
    assert math.isclose(deltas["delta"].iloc[0], 1.0 - 1.2)


def test_the_first_retrain_of_a_job_has_no_delta() -> None:
    vals = pd.DataFrame({"run_pk": [0, 0], "step": [0, 10], "value": [2.0, 1.5]})
    assert executive.validation_delta_per_run(_runs(["succeeded"]), vals).empty


def test_drift_kpi_reports_the_latest_sample_and_the_one_before() -> None:
    samples = pd.DataFrame(
        {"job": "j", "name": "psi", "time": [NOW, NOW + timedelta(hours=1)], "value": [0.1, 0.3]}
    )
    latest = executive.drift_kpi(samples)
    assert (latest["value"].iloc[0], latest["previous"].iloc[0]) == (0.3, 0.1)


def test_a_running_job_without_heartbeat_is_stale_and_listed_first() -> None:
    runs = pd.concat([_runs(["succeeded"], job="a"), _runs(["running"], job="b")])
    table = oncall.jobs_table(runs, NOW, stale_after_s=600)
    assert table["job"].tolist() == ["b", "a"]
    assert table["stale"].tolist() == [True, False]
    assert table["heartbeat"].iloc[0] == "30m 0s"


def test_hyperparameter_diff_puts_changed_values_first() -> None:
    diff = postmortem.hyperparameter_diff({"lr": 0.1, "eps": 1e-8}, {"lr": 0.01, "eps": 1e-8})
    assert diff.iloc[0].to_dict() == {
        "name": "lr",
        "this run": "0.1",
        "last good run": "0.01",
        "changed": True,
    }


def test_loss_spikes_count_a_run_of_spiking_steps_once_and_nan_is_a_spike() -> None:
    loss = [1.0] * 20 + [10.0, 11.0] + [1.0] * 5 + [math.nan]
    spikes = postmortem.loss_spikes(pd.DataFrame({"step": range(len(loss)), "loss": loss}))
    assert spikes["step"].tolist() == [20, 27]


def test_empty_figures_say_what_to_do_and_escape_job_text() -> None:
    fig = empty_figure("<b>x</b>", "no runs yet — <script>")
    assert "&lt;script&gt;" in fig.layout.annotations[0].text
    assert oncall.loss_figure(pd.DataFrame(), pd.DataFrame()).layout.annotations


def test_timeline_interleaves_alerts_spikes_nans_checkpoints_and_validations_in_time_order() -> (
    None
):
    t0 = pd.Timestamp(NOW)
    step_times = pd.DataFrame(
        {"step": range(1, 101), "time": [t0 + timedelta(seconds=s) for s in range(1, 101)]}
    )
    run = {"started_at": t0, "ended_at": None, "status": "running"}
    alerts = pd.DataFrame(
        {
            "alertname": ["TrainingNonFinite"],
            "severity": ["page"],
            "summary": ["nan"],
            "starts_at": [t0 + timedelta(seconds=70.5)],
        }
    )
    spikes = pd.DataFrame({"step": [30], "loss": [9.0], "median": [1.0]})
    first_bad = {"step": 61, "layers": [("fc.weight", 3)]}
    checkpoints = pd.DataFrame(
        {"step": [40, 80], "time": [t0 + timedelta(seconds=40), t0 + timedelta(seconds=80)],
         "action": "save", "ok": True, "detail": "", "seconds": 0.01}
    )  # fmt: skip
    validations = pd.DataFrame(
        {"step": [20, 60], "time": [t0 + timedelta(seconds=20), t0 + timedelta(seconds=60)],
         "name": "val_loss", "value": [1.0, 0.9]}
    )  # fmt: skip
    events = postmortem.timeline(
        run, alerts, spikes, first_bad, checkpoints, validations, step_times
    )
    assert events["kind"].tolist() == [
        "run", "loss spike", "checkpoint save", "validation", "first non-finite", "alert",
        "checkpoint save",
    ]  # fmt: skip
    # the validations are one row, at the last evaluation
    assert events["step"].tolist()[1:] == [30, 40, 60, 61, 70, 80]
    assert events["time"].is_monotonic_increasing


def test_spend_of_cpu_only_runs_says_no_gpu_time_was_recorded() -> None:
    runs = pd.DataFrame(
        {"started_at": pd.to_datetime(["2026-11-20T10:00:00Z"]), "gpu_seconds": [0.0]}
    )
    daily = executive.gpu_spend_by_day(runs, gpu_hour_usd=2.5)
    annotations = executive.spend_figure(daily).layout.annotations
    assert "no GPU time recorded" in annotations[0].text


def test_an_infinite_update_ratio_does_not_hide_the_update_ratio_curve() -> None:
    from rmswatch.app.views import debug

    series = pd.DataFrame(
        {
            "step": [1, 2, 3, 4],
            "grad_norm": [1.0, 0.0, 2.0, float("nan")],
            "update_ratio": [0.01, 0.02, float("inf"), float("nan")],
        }
    )
    fig = debug.layer_series_figure(series, "fc.weight")
    ratio = [t for t in fig.data if t.name == "update ratio"][0]
    ys = [float(y) for y in ratio.y]
    assert ys[:2] == [0.01, 0.02] and all(math.isnan(y) for y in ys[2:])
    grad = [t for t in fig.data if t.name == "grad norm"][0]
    assert math.isnan(float(grad.y[1]))  # a zero has no place on a log axis either


def test_a_loss_that_climbs_orders_of_magnitude_is_drawn_on_a_log_axis() -> None:
    steps = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [2.3, 1.9, 4e8, float("nan")]})
    calm = pd.DataFrame({"step": [1, 2, 3], "loss": [2.3, 1.9, 1.7]})
    no_validations = pd.DataFrame(columns=["step", "value"])
    assert oncall.loss_figure(steps, no_validations).layout.yaxis.type == "log"
    assert oncall.loss_figure(calm, no_validations).layout.yaxis.type != "log"
