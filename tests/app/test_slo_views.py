"""SLO and executive views over the alerting engine's table (pandas fixtures shaped like
`Evaluator.slo_table` / `period_counts`, windows from the real burn policy)."""

from __future__ import annotations

import math

import pandas as pd

from rmswatch.alerting.slo import SloWindows
from rmswatch.alerting.spec import SloSpec
from rmswatch.app.views import executive, slo

RETRAIN = SloSpec.model_validate(
    {"name": "retrain-success", "sli": {"kind": "retrain_success"}, "objective": 90}
)
STEPS = SloSpec.model_validate(
    {"name": "nonfinite-free-steps", "sli": {"kind": "nonfinite_free_steps"}, "objective": 99}
)
WINDOWS = {spec.name: SloWindows.for_spec(spec) for spec in (RETRAIN, STEPS)}
LABELS = ("1h", "5m", "6h", "30m", "1d", "2h", "3d")


def _row(spec: SloSpec, key: str, events: float, bad: float, **extra: object) -> dict[str, object]:
    ratio = bad / events if events else math.nan
    row: dict[str, object] = {
        "slo": spec.name,
        "key": key,
        "objective": spec.objective,
        "events_period": events,
        "bad_period": bad,
        "budget_remaining": 1 - (ratio if events else 0) / spec.error_budget,
        "time_to_exhaustion_seconds": math.inf,
        "firing_page": False,
        "firing_ticket": False,
    }
    for label in LABELS:
        row[f"burn_rate_{label}"] = ratio / spec.error_budget
        row[f"events_{label}"] = events
    row.update(extra)
    return row


def _table(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_summary_lists_paging_series_first_then_the_least_budget_left() -> None:
    table = _table(
        _row(RETRAIN, "a", 10, 0),
        _row(RETRAIN, "b", 10, 1),
        _row(STEPS, "a", 1000, 500, firing_page=True, time_to_exhaustion_seconds=0.0),
    )
    summary = slo.slo_summary(table, WINDOWS)
    assert summary[["slo", "series"]].values.tolist() == [
        ["nonfinite-free-steps", "a"],
        ["retrain-success", "b"],
        ["retrain-success", "a"],
    ]
    assert summary["alerting"].tolist() == ["page", "—", "—"]
    assert summary["exhausted_in"].tolist() == ["spent", "not burning", "not burning"]
    assert math.isclose(summary["burn_now"].iloc[0], 50.0)


def test_window_burns_pair_long_and_short_windows_with_the_pair_threshold() -> None:
    table = _table(_row(STEPS, "a", 1000, 20, burn_rate_5m=7.0))
    burns = slo.window_burns(table, "nonfinite-free-steps", "a", WINDOWS["nonfinite-free-steps"])
    first = burns[burns["pair"] == "1h / 5m"]
    assert first["leg"].tolist() == ["long", "short"]
    assert [round(b, 9) for b in first["burn_rate"]] == [2.0, 7.0]
    assert first["factor"].tolist() == [14.4, 14.4]
    assert set(burns["severity"]) == {"page", "ticket"}
    assert slo.burn_rate_figure(burns).data


def test_budget_burn_accumulates_the_periods_events_bucket_by_bucket() -> None:
    counts = pd.DataFrame(
        {
            "slo": "retrain-success",
            "key": "a",
            "start": [0.0, 3600.0, 7200.0],
            "end": [3600.0, 7200.0, 10800.0],
            "good": [5.0, 4.0, 9.0],
            "total": [5.0, 5.0, 10.0],
        }
    )
    burn = slo.budget_burn(counts, RETRAIN, now=9000.0)
    # budget 10%: 0/5 bad -> 100%; 1/10 -> 0%; 2/20 -> 0%
    assert [round(v, 6) for v in burn["budget_left"]] == [1.0, 1.0, 0.0, 0.0]
    assert burn["time"].iloc[-1] == pd.Timestamp(9000, unit="s", tz="UTC")
    assert slo.budget_burn_figure(burn, RETRAIN).data


def test_an_overspent_budget_reads_as_budgets_spent_not_a_huge_negative_percent() -> None:
    assert slo.budget_text(-132.3) == "spent (133× budget)"
    assert slo.budget_text(0.5) == "50.0%"


def test_alerts_for_an_slo_are_the_ones_whose_slo_label_names_it() -> None:
    alerts = pd.DataFrame(
        {
            "alertname": ["SloErrorBudgetBurn", "SloErrorBudgetBurnSteps", "SloErrorBudgetBurn"],
            "labels": [{"slo": "retrain-success"}, {"slo": "nonfinite-free-steps"}, {}],
        }
    )
    assert slo.alerts_for_slo(alerts, "nonfinite-free-steps")["alertname"].tolist() == [
        "SloErrorBudgetBurnSteps"
    ]


def test_retrain_rollup_sums_the_chosen_jobs_and_spends_the_budget_like_the_alerts() -> None:
    table = _table(_row(RETRAIN, "a", 10, 1), _row(RETRAIN, "b", 10, 3), _row(STEPS, "a", 5, 5))
    both = executive.slo_rollup(table, RETRAIN)
    assert (both.events, both.bad) == (20, 4)
    assert math.isclose(both.rate, 0.8) and math.isclose(both.budget_left, 1 - 0.2 / 0.1)
    only_a = executive.slo_rollup(table, RETRAIN, ["a"])
    assert math.isclose(only_a.budget_left, 0.0, abs_tol=1e-12)


def test_compliance_marks_a_job_with_a_spent_budget_and_ignores_series_without_events() -> None:
    table = _table(_row(RETRAIN, "a", 10, 0), _row(STEPS, "a", 0, 0), _row(RETRAIN, "b", 10, 5))
    compliance = executive.compliance_table(table)
    assert compliance["job"].tolist() == ["b", "a"]
    assert compliance["within budget"].tolist() == ["NO — retrain-success spent", "yes"]
    assert compliance.set_index("job").loc["a", "nonfinite-free-steps"] == "no events"
    assert compliance.set_index("job").loc["b", "retrain-success"] == "SPENT"
