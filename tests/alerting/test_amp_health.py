"""The amp_skips health rule (F6, fp16 overflow) over a real store, through evaluate()."""

from __future__ import annotations

from rmswatch.alerting.evaluate import evaluate
from rmswatch.config import Config
from tests.alerting.slo_store import T0, add_run, add_steps, new_store
from tests.alerting.test_evaluate import active


def _rows(n: int, skipped_at: set[int], scale: float = 65536.0) -> list[dict[str, object]]:
    return [
        {
            "step": i,
            "time": T0 + i,
            "loss": 1.0,
            "step_seconds": 0.1,
            "skipped": i in skipped_at,
            "loss_scale": scale / 2 ** sum(1 for s in skipped_at if s <= i),
        }
        for i in range(1, n + 1)
    ]


def test_repeated_skipped_steps_raise_a_ticket_naming_the_count(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    storm = add_run(engine, "storm")
    add_steps(engine, storm, _rows(300, {260 + 4 * k for k in range(9)}))
    calm = add_run(engine, "calm")  # the usual few skips while the scale settles at the start
    add_steps(engine, calm, _rows(300, {1, 2, 3, 4, 5}))
    signals = evaluate(engine, Config(), T0 + 301)
    (found,) = active(signals, "TrainingAmpStepsSkipped")
    assert found.labels["run_id"] == "storm" and found.severity == "ticket"
    assert found.value == 9
    assert "9 skipped AMP steps in the last 100" in found.annotations["summary"]
    assert found.annotations["runbook_url"].endswith("/runbooks/nan.md")


def test_a_collapsed_loss_scale_fires_even_without_many_recent_skips(sqlite_url: str) -> None:
    engine = new_store(sqlite_url)
    pk = add_run(engine, "collapse")
    # 18 halvings long ago took 65536 down to 0.25; none in the last 100 steps
    add_steps(engine, pk, _rows(300, set(range(10, 28))))
    signals = evaluate(engine, Config(), T0 + 301)
    (found,) = active(signals, "TrainingAmpStepsSkipped", run_id="collapse")
    assert found.value == 0 and "loss scale 0.25" in found.annotations["summary"]
    quiet = Config.model_validate({"health": {"amp_skips": {"min_loss_scale": 0.1}}})
    assert not active(evaluate(engine, quiet, T0 + 301), "TrainingAmpStepsSkipped")
