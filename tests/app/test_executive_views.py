"""The executive view in words a manager can act on: medians with outliers named, incidents
counted, drift with its unit and trend, budgets that never clip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from rmswatch.alerting.spec import SloSpec
from rmswatch.app.views import common, executive, slo

T0 = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC))
RETRAIN = SloSpec.model_validate(
    {
        "name": "retrain-success",
        "sli": {"kind": "retrain_success"},
        "objective": 90,
        "min_events": 3,
    }
)


def _deltas(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"run_id": [f"r{i}" for i in range(len(values))], "job": "j", "delta": values}
    )


def test_one_blown_up_retrain_is_named_as_an_outlier_not_averaged_in() -> None:
    summary = executive.delta_summary(_deltas([-0.1, -0.05, 0.02, -0.08, 3.291e29]))
    assert summary.median == np.median([-0.1, -0.05, 0.02, -0.08])
    assert summary.outliers["run_id"].tolist() == ["r4"]
    assert "r4" in summary.sentence() and "postmortem" in summary.sentence()


def test_ordinary_changes_are_not_outliers() -> None:
    assert not executive.flag_outliers(pd.Series([-0.1, -0.12, -0.09, -0.11])).any()


def test_the_delta_chart_is_symlog_so_small_changes_stay_visible_next_to_a_blow_up() -> None:
    fig = executive.validation_delta_figure(_deltas([-0.1, 0.05, -0.2, 3.291e29]))
    low, high = fig.layout.yaxis.range
    ordinary = np.abs(np.asarray(fig.data[0].y[:3], dtype=float))
    assert ordinary.min() > (high - low) / 10  # each a readable bar, not 1e-30 of the tallest
    assert fig.data[0].y[3] > high  # the outlier runs off the top ...
    assert "3.29e+29 (outlier)" in fig.layout.annotations[0].text  # ... and says its value
    assert "0" in fig.layout.yaxis.ticktext
    assert fig.data[0].marker.color[3] == common.RED


def test_a_succeeded_run_with_a_page_while_it_ran_counts_as_succeeded_with_incident() -> None:
    runs = pd.DataFrame(
        {"run_id": ["a", "b", "c"], "job": "j", "status": ["succeeded", "succeeded", "failed"],
         "started_at": [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)],
         "ended_at": [T0 + timedelta(minutes=50), T0 + timedelta(minutes=110), pd.NaT]}
    )  # fmt: skip
    events = pd.DataFrame(
        {"time": [T0 + timedelta(minutes=70), T0 + timedelta(minutes=10)], "job": "j",
         "run_id": ["", ""], "alertname": ["TrainingLossDivergence", "SloErrorBudgetBurn"],
         "severity": "page", "to_state": "firing"}
    )  # fmt: skip
    incidents = executive.incident_run_ids(runs, events)
    assert incidents == {"b"}  # an SLO page is the job's, not run a's
    rows = executive.job_rows(runs, _deltas([]), incidents)
    assert rows[["succeeded", "with incident", "failed"]].values.tolist() == [[1, 1, 1]]


def test_the_stores_verdict_wins_when_it_has_one() -> None:
    runs = pd.DataFrame(
        {"run_id": ["a"], "job": "j", "status": "succeeded", "verdict": "succeeded with incident",
         "started_at": [T0], "ended_at": [T0]}
    )  # fmt: skip
    assert executive.incident_run_ids(runs, pd.DataFrame()) == {"a"}


def test_drift_says_its_unit_how_it_moved_since_last_week_and_what_to_do() -> None:
    samples = pd.DataFrame(
        {"job": "ranker", "name": "model_drift",
         "time": [T0, T0 + timedelta(days=8)], "value": [10.0, 30.1],
         "labels": [{"unit": "PSI"}, {"unit": "PSI"}]}
    )  # fmt: skip
    (card,) = executive.drift_cards(samples)
    assert card.title == "model drift · ranker" and card.value == "30.1 PSI"
    assert "3.01× a week ago (10)" in card.sentence and "retrain" in card.sentence
    assert card.tone == "warn"


def test_drift_without_a_unit_says_so() -> None:
    samples = pd.DataFrame(
        {"job": "j", "name": "psi", "time": [T0], "value": [0.2], "labels": [{}]}
    )
    (card,) = executive.drift_cards(samples)
    assert card.sentence.startswith("no unit given")


def test_one_failure_out_of_one_is_too_few_events_not_out_of_budget() -> None:
    table = pd.DataFrame(
        {"slo": "retrain-success", "key": ["a", "b"], "events_period": [1.0, 5.0],
         "bad_period": [1.0, 4.0], "budget_remaining": [-9.0, -7.0]}
    )  # fmt: skip
    compliance = executive.compliance_table(table, specs={"retrain-success": RETRAIN})
    by_job = compliance.set_index("job")
    assert by_job.loc["a", "within budget"] == "yes"
    assert by_job.loc["a", "retrain-success"] == "too few events (1 of 3)"
    assert by_job.loc["b", "within budget"] == "NO — retrain-success spent"


def test_an_overspent_budget_is_drawn_where_it_is_not_clipped_at_minus_100() -> None:
    burn = pd.DataFrame(
        {"series": "j", "time": [T0, T0 + timedelta(hours=1)], "budget_left": [1.0, -2.44],
         "bad": [0, 5], "total": [0, 10]}
    )  # fmt: skip
    fig = slo.budget_burn_figure(burn, RETRAIN)
    lowest = min(fig.data[0].y)
    assert lowest < common.symlog(-100.0, 100.0)  # below the -100% tick
    assert fig.layout.yaxis.range[0] < lowest  # inside the axis
    assert fig.data[0].customdata[1][0] == -244.0  # the hover says the real number
    assert "-100%" in fig.layout.yaxis.ticktext


def test_a_retrain_that_is_merely_worse_stays_in_the_median_and_shows_as_worse() -> None:
    # the demo's slow-convergence retrain: worse than its job's previous one, not a blow-up
    summary = executive.delta_summary(_deltas([-0.0107, 1.56, 0.0616]))
    assert summary.outliers.empty and summary.median == 0.0616
