"""evaluate(): SLO burn and health rules over a real store (SQLite file; PostgreSQL once)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from rmswatch.alerting.evaluate import Evaluator, evaluate, slo_status
from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from rmswatch.store.models import Run
from tests.alerting.slo_store import (
    T0,
    add_checkpoint,
    add_run,
    add_steps,
    add_validations,
    at,
    new_store,
)

HOUR = 3600.0


def active(signals: Sequence[Signal], alertname: str, **labels: str) -> list[Signal]:
    return [
        s for s in signals
        if s.active and s.alertname == alertname
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]  # fmt: skip


def steps(n: int, start: float, every_s: float, **columns: object) -> list[dict[str, object]]:
    return [
        {"step": i, "time": start + i * every_s, "loss": 1.0, "step_seconds": 0.1, **columns}
        for i in range(n)
    ]


def test_nan_steps_page_with_labels_runbook_and_dashboard_link(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1", labels={"model": "resnet50", "cluster": "eu-1"})
    rows = steps(600, T0, 6.0)
    for row in rows[-60:]:
        row["nonfinite_grad"] = 3
    add_steps(engine, pk, rows)
    config = Config.model_validate({"server": {"external_url": "https://rmswatch.example"}})
    signals = evaluate(engine, config, T0 + HOUR)
    page = active(signals, "SloErrorBudgetBurn", slo="nonfinite-free-steps", severity="page")
    assert len(page) == 1
    assert page[0].labels["job"] == "retrain" and page[0].labels["model"] == "resnet50"
    assert page[0].labels["cluster"] == "eu-1"
    assert "99.9%" in page[0].annotations["summary"]
    nan = active(signals, "TrainingNonFinite", run_id="r1")
    assert nan and nan[0].severity == "page" and nan[0].value == 3
    # served by this server (its external_url): no runbook_base_url is configured
    assert nan[0].annotations["runbook_url"] == "https://rmswatch.example/runbooks/nan.md"
    link = nan[0].annotations["dashboard_url"]
    assert link.startswith("https://rmswatch.example/oncall?job=retrain&run=r1&from=")
    assert "2025-01-01T00%3A00%3A00Z" in link  # an hour before the alert time
    # the healthy latency SLO is evaluated and says so
    assert not active(signals, "SloErrorBudgetBurn", slo="step-latency")
    assert any(s.alertname == "SloErrorBudgetBurn" and s.labels["slo"] == "step-latency"
               for s in signals)  # fmt: skip


def test_two_failed_retrains_in_a_quiet_week_do_not_page(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    for i in range(2):
        add_run(engine, f"r{i}", status="failed", started=T0 + i * 600, ended=T0 + i * 600 + 300)
    signals = evaluate(engine, Config(), T0 + HOUR)
    assert not active(signals, "SloErrorBudgetBurn", slo="retrain-success")
    table = slo_status(engine, Config(), T0 + HOUR)
    row = table[table["slo"] == "retrain-success"].iloc[0]
    assert row["burn_rate_1h"] == pytest.approx(20.0)  # burning, but on 2 events
    # the same failure rate over enough retrains pages
    for i in range(2, 8):
        add_run(engine, f"r{i}", status="failed", started=T0 + 2000, ended=T0 + 2000 + i)
    signals = evaluate(engine, Config(), T0 + HOUR)
    assert active(signals, "SloErrorBudgetBurn", slo="retrain-success", severity="page")


def test_a_finished_job_is_not_a_stalled_one(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    done = add_run(engine, "done", status="succeeded", ended=T0 + 120)
    hung = add_run(engine, "hung")
    add_steps(engine, done, steps(20, T0, 6.0))
    add_steps(engine, hung, steps(20, T0, 6.0))
    signals = evaluate(engine, Config(), T0 + HOUR)
    assert [s.labels["run_id"] for s in active(signals, "TrainingStalled")] == ["hung"]


def test_divergence_needs_the_loss_above_k_times_its_median_for_m_steps(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    rows = steps(300, T0, 1.0)
    for row in rows[-10:]:
        row["loss"] = 3.5
    add_steps(engine, pk, rows)
    assert active(evaluate(engine, Config(), T0 + 300), "TrainingLossDivergence")
    engine2 = new_store(sqlite_url.replace("rmswatch.db", "two.db"))
    pk2 = add_run(engine2, "r1")
    rows = steps(300, T0, 1.0)
    for row in rows[-9:]:  # one step short of consecutive_steps
        row["loss"] = 3.5
    add_steps(engine2, pk2, rows)
    assert not active(evaluate(engine2, Config(), T0 + 300), "TrainingLossDivergence")


def test_ticket_rules_validation_eff_lr_grad_variance_and_checkpoints(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    rows = steps(1200, T0, 1.0)
    for row in rows:
        i = int(row["step"])  # type: ignore[call-overload]
        row["lr"] = 1e-4
        row["eff_lr_mean"] = 0.001 if i < 1100 else 0.01
        row["grad_norm"] = (1.0 + 0.05 * (i % 2)) if i < 1150 else (1.0 + 5.0 * (i % 2))
    add_steps(engine, pk, rows)
    # a smooth curve, then three checks well outside its noise
    curve = [1.0, 0.9, 0.85, 0.82, 0.80, 0.79, 1.2, 1.3, 1.4]
    add_validations(engine, pk, [(100 * (k + 1), T0 + 100 * (k + 1), v)
                                 for k, v in enumerate(curve)])  # fmt: skip
    add_checkpoint(engine, pk, 1000, T0 + 1000, ok=False)
    signals = evaluate(engine, Config(), T0 + 1200)
    for name in ("ValidationLossRegression", "EffectiveLrJump", "GradNormVarianceOutOfRange",
                 "CheckpointSaveFailures"):  # fmt: skip
        found = active(signals, name, run_id="r1")
        assert found and found[0].severity == "ticket", name
    jump = active(signals, "EffectiveLrJump")[0]
    assert jump.value == pytest.approx(10.0) and jump.for_seconds == 60


def test_an_eff_lr_jump_is_seen_through_sentinel_only_steps(sqlite_url: str) -> None:
    """Budget mode: full records (with an eff-LR) only every other step, sentinel rows between."""
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    rows = steps(1200, T0, 1.0)
    for row in rows:
        i = int(row["step"])  # type: ignore[call-overload]
        row["full"] = i % 2 == 0
        row["lr"] = 1e-4 if i % 2 == 0 else None  # judged on eff_lr / lr
        row["eff_lr_mean"] = (0.001 if i < 1000 else 0.01) if i % 2 == 0 else None
    add_steps(engine, pk, rows)
    signals = evaluate(engine, Config(), T0 + 1200)
    jump = active(signals, "EffectiveLrJump", run_id="r1")
    assert jump and jump[0].value == pytest.approx(10.0)


def test_step_windows_judge_a_slow_run_by_its_own_steps(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "slow")
    rows = steps(1000, T0, 1.0)
    for row in rows[-200:]:
        row["step_seconds"] = 5.0
    add_steps(engine, pk, rows)
    signals = evaluate(engine, Config(), T0 + 1000)
    found = active(signals, "SloErrorBudgetBurnSteps", slo="step-latency", severity="page")
    assert found and found[0].labels["run_id"] == "slow"


@pytest.mark.slow
def test_incremental_ticks_match_a_cold_evaluation(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    evaluator = Evaluator(engine, Config())
    for minute in range(0, 120, 10):
        rows = steps(60, T0 + minute * 60, 10.0)
        for row in rows:
            row["step"] = int(row["step"]) + minute * 6  # type: ignore[call-overload]
            row["nonfinite_loss"] = 1 if minute >= 90 and int(row["step"]) % 3 == 0 else 0  # type: ignore[call-overload]
        add_steps(engine, pk, rows[:60])
        evaluator.tick(T0 + minute * 60 + 600)
    warm = evaluator.slo_table.set_index(["slo", "key"])
    cold = slo_status(engine, Config(), T0 + 110 * 60 + 600).set_index(["slo", "key"])
    columns = [c for c in cold.columns if c.startswith(("burn_rate", "events"))]
    assert (warm.loc[:, columns].fillna(-1) == cold.loc[:, columns].fillna(-1)).all().all()


@pytest.mark.integration
def test_evaluation_reads_postgresql_the_same_way(pg_url: str) -> None:
    engine = new_store(pg_url)
    pk = add_run(engine, "r1")
    rows = steps(600, T0, 6.0)
    for row in rows[-60:]:
        row["nonfinite_loss"] = 1
    add_steps(engine, pk, rows)
    add_run(engine, "old", status="failed", started=T0, ended=T0 + 60)
    signals = evaluate(engine, Config(), T0 + HOUR)
    assert active(signals, "SloErrorBudgetBurn", slo="nonfinite-free-steps", severity="page")
    assert active(signals, "TrainingNonFinite", run_id="r1")
    table = slo_status(engine, Config(), T0 + HOUR)
    assert table.set_index(["slo", "key"]).loc[("retrain-success", "retrain"), "events_1h"] == 1


def _loss_rows(first: int, last: int, loss: float, **columns: object) -> list[dict[str, object]]:
    return [
        {"step": i, "time": T0 + i, "loss": loss, "grad_norm": 1.0, "step_seconds": 1.0,
         **columns}
        for i in range(first, last)
    ]  # fmt: skip


def test_a_finite_divergence_stays_firing_while_the_loss_stays_up(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    evaluator = Evaluator(engine, Config())
    add_steps(engine, pk, _loss_rows(0, 300, 1.0))
    assert not active(evaluator.tick(T0 + 300), "TrainingLossDivergence")
    # the loss climbs many decades and stays there, finite, far longer than the 200-step
    # smoothing window: the baseline is the run's best level, so it never follows the loss up
    for start in range(300, 1000, 100):
        add_steps(engine, pk, _loss_rows(start, start + 100, 1e30))
        found = active(evaluator.tick(T0 + start + 100), "TrainingLossDivergence", run_id="r1")
        assert found and found[0].severity == "page", start
        assert found[0].value == pytest.approx(1e30)
    add_steps(engine, pk, _loss_rows(1000, 1100, 1.0))  # it comes back: resolved
    assert not active(evaluator.tick(T0 + 1100), "TrainingLossDivergence")


def test_gradients_collapsed_to_zero_while_the_loss_stays_high_are_a_divergence(
    sqlite_url: str,
) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    evaluator = Evaluator(engine, Config())
    add_steps(engine, pk, _loss_rows(0, 300, 1.0))
    evaluator.tick(T0 + 300)
    add_steps(engine, pk, _loss_rows(300, 330, 2.0, grad_norm=0.0))  # 2x: under factor 3
    [found] = active(evaluator.tick(T0 + 330), "TrainingLossDivergence", run_id="r1")
    assert "gradient norm exactly 0" in found.annotations["summary"]


def test_a_spike_between_two_ticks_is_judged_and_fires_once(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    evaluator = Evaluator(engine, Config())
    add_steps(engine, pk, _loss_rows(0, 300, 1.0))
    evaluator.tick(T0 + 300)
    # 20 steps at 50x and back to normal, all logged between two ticks
    add_steps(engine, pk, _loss_rows(300, 320, 50.0) + _loss_rows(320, 360, 1.0))
    assert active(evaluator.tick(T0 + 360), "TrainingLossDivergence", run_id="r1")
    add_steps(engine, pk, _loss_rows(360, 400, 1.0))
    assert not active(evaluator.tick(T0 + 400), "TrainingLossDivergence")


def test_a_nan_in_a_run_that_ended_before_the_next_tick_still_fires(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    evaluator = Evaluator(engine, Config())
    add_steps(engine, pk, _loss_rows(0, 100, 1.0))
    evaluator.tick(T0 + 100)
    add_steps(
        engine, pk, [*_loss_rows(100, 101, 1.0, nonfinite_loss=1), *_loss_rows(101, 102, 1.0)]
    )
    with engine.begin() as conn:  # the job's guard aborts it at once
        conn.execute(Run.__table__.update().where(Run.id == pk).values(
            status="failed", ended_at=at(T0 + 102)))  # fmt: skip
    [nan] = active(evaluator.tick(T0 + 110), "TrainingNonFinite", run_id="r1")
    assert nan.severity == "page"
    assert not active(evaluator.tick(T0 + 120), "TrainingNonFinite")  # the run ended: resolved


def _lr_rows(lrs: Sequence[float], contribution: float) -> list[dict[str, object]]:
    return [
        {"step": i, "time": T0 + i, "loss": 1.0, "grad_norm": 1.0, "lr": lr,
         "eff_lr_mean": lr * contribution}
        for i, lr in enumerate(lrs)
    ]  # fmt: skip


def test_a_scheduled_warm_up_raises_no_effective_lr_alert(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    # linear warm-up from 1e-5 to 1e-3 over 200 steps, then cosine-like decay: eff_lr follows
    # the schedule 100x up, but the optimizer's own contribution (eff_lr / lr) is unchanged
    warm = [1e-5 + (1e-3 - 1e-5) * i / 200 for i in range(200)]
    decay = [1e-3 * (0.5 + 0.5 * math.cos(math.pi * i / 400)) + 1e-6 for i in range(400)]
    evaluator = Evaluator(engine, Config())
    rows = _lr_rows(warm + decay, 1000.0)
    for start in range(0, 600, 50):
        add_steps(engine, pk, rows[start : start + 50])
        assert not active(evaluator.tick(T0 + start + 50), "EffectiveLrJump"), start


def test_a_learning_rate_raised_by_hand_is_an_effective_lr_jump(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    evaluator = Evaluator(engine, Config())
    rows = _lr_rows([1e-3] * 250 + [1e-2] * 50, 1000.0)
    add_steps(engine, pk, rows[:250])
    assert not active(evaluator.tick(T0 + 250), "EffectiveLrJump")
    add_steps(engine, pk, rows[250:])
    [jump] = active(evaluator.tick(T0 + 300), "EffectiveLrJump", run_id="r1")
    assert jump.value == pytest.approx(10.0)
    assert "raised 10x in one step at step 250" in jump.annotations["summary"]


def test_a_resume_that_lost_its_optimizer_state_is_an_effective_lr_jump(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    before = add_run(engine, "r1", status="succeeded", ended=T0 + 300)
    add_steps(engine, before, _lr_rows([1e-3] * 300, 1000.0))
    resumed = add_run(engine, "r2", started=T0 + 400)
    with engine.begin() as conn:
        conn.execute(Run.__table__.update().where(Run.id == resumed).values(resumed_from_step=300))
    # square_avg restarted at zero: 1 / sqrt(v) is 20x what it was before the resume
    rows = [{**r, "step": 300 + int(r["step"]), "time": T0 + 400 + float(r["time"]) - T0}  # type: ignore[arg-type]
            for r in _lr_rows([1e-3] * 150, 20_000.0)]  # fmt: skip
    add_steps(engine, resumed, rows)
    [jump] = active(evaluate(engine, Config(), T0 + 560), "EffectiveLrJump", run_id="r2")
    assert jump.value == pytest.approx(20.0)
    assert "did not restore the optimizer state" in jump.annotations["summary"]


def test_validation_regression_needs_evidence_beyond_the_validation_noise(
    sqlite_url: str,
) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "r1")
    add_steps(engine, pk, steps(10, T0, 1.0))
    # a noisy validation set: the last three are 3-6% above the best, well inside its noise
    noisy = [1.0, 0.80, 0.95, 0.78, 0.92, 0.81, 0.83, 0.82, 0.80]
    add_validations(engine, pk, [(10 * (k + 1), T0 + k, v) for k, v in enumerate(noisy)])
    assert not active(evaluate(engine, Config(), T0 + 20), "ValidationLossRegression")


def test_an_slo_with_two_events_does_not_call_its_budget_spent(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    for k in range(2):  # two finished runs, each ending worse than its best validation
        pk = add_run(engine, f"r{k}", status="succeeded", started=T0 + k * 100,
                     ended=T0 + k * 100 + 50)  # fmt: skip
        add_validations(engine, pk, [(10, T0 + k * 100 + 10, 0.5), (20, T0 + k * 100 + 20, 0.9)])
    table = slo_status(engine, Config(), T0 + 1000)
    row = table[table["slo"] == "validation-improvement"].iloc[0]
    assert row["events_period"] == 2 and row["bad_period"] == 2
    assert math.isnan(row["budget_remaining"])
    signals = evaluate(engine, Config(), T0 + 1000)
    summary = next(s for s in signals if s.labels.get("slo") == "validation-improvement")
    assert "spent" not in summary.annotations["summary"]
    assert "too few events (2 of 5) to judge the budget" in summary.annotations["summary"]


def test_slow_convergence_and_overspend_are_judged_against_the_jobs_previous_retrains(
    sqlite_url: str,
) -> None:
    engine = new_store(sqlite_url)
    for k in range(2):  # two earlier retrains: loss 2 -> 0.5 over 400 steps, val 0.6 at the end
        pk = add_run(engine, f"old-{k}", status="succeeded", started=T0 + k * 1000,
                     ended=T0 + k * 1000 + 400)  # fmt: skip
        add_steps(engine, pk, [{"step": i, "time": T0 + k * 1000 + i,
                                "loss": 2.0 - 1.5 * i / 400} for i in range(1, 401)])  # fmt: skip
        add_validations(engine, pk, [(400, T0 + k * 1000 + 400, 0.6)])
    start = T0 + 5000
    slow = add_run(engine, "slow", started=start)
    # a flat loss (lr far too low) for 900 steps: 1.9 where the history was at 0.5 by step 400
    add_steps(engine, slow, [{"step": i, "time": start + i, "loss": 1.9}
                             for i in range(1, 901)])  # fmt: skip
    add_validations(engine, slow, [(800, start + 800, 1.8)])
    signals = evaluate(engine, Config(), start + 901)
    [lagging] = active(signals, "TrainingSlowConvergence", run_id="slow")
    assert lagging.severity == "ticket" and lagging.value > 1.5
    [spent] = active(signals, "TrainingOverspend", run_id="slow")
    assert "900 steps" in spent.annotations["summary"] and spent.value == pytest.approx(2.25)
    # a retrain keeping pace with its history raises neither
    good = add_run(engine, "good", started=start)
    add_steps(engine, good, [{"step": i, "time": start + i, "loss": 2.0 - 1.5 * i / 400}
                             for i in range(1, 301)])  # fmt: skip
    signals = evaluate(engine, Config(), start + 901)
    assert not active(signals, "TrainingSlowConvergence", run_id="good")
    assert not active(signals, "TrainingOverspend", run_id="good")
