"""Budget mode: a sentinel every step, full telemetry on a budget, anomalies always full."""

from __future__ import annotations

import math

import pytest
import torch

from rmswatch.trainer_hooks import Monitor
from rmswatch.trainer_hooks.sentinel import AnomalyDetector, Cadence, RunningMedian, Thresholds
from tests.trainer_hooks.support import batches, tiny_model, train


def _sparse_cadence_monitor(opt: torch.optim.Optimizer, model: torch.nn.Module) -> Monitor:
    # A budget no full step fits in: after the first measurements (steps 1-3) no step is
    # scheduled full for `max_interval` steps, so any later full record is the sentinel's doing.
    return Monitor(opt, model=model, every=None, overhead=1e-9, max_interval=1000)


def _kinds(mon: Monitor) -> dict[int, bool]:
    return {r.step: r.full for r in mon.records}


def test_the_sentinel_catches_a_nan_off_the_full_cadence_with_that_layers_exact_count() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    mon = _sparse_cadence_monitor(opt, model)
    target = model[2].weight
    k = 9  # 1-based step

    def poison(i: int) -> None:
        if i == k - 1:
            assert target.grad is not None
            target.grad[0, 0] = float("nan")
            target.grad[3, 4] = float("inf")
            target.grad[5, 5] = float("-inf")

    train(
        model,
        opt,
        batches(k + 2),
        after_backward=poison,
        after_step=lambda i, loss: mon.record_loss(loss),
    )
    mon.close()
    kinds = _kinds(mon)
    assert len(kinds) == k + 2  # a record every step
    assert all(not kinds[s] for s in range(4, k)), kinds  # sentinel-only before the NaN
    bad = mon.records[k - 1]
    assert bad.step == k and bad.full
    assert bad.layers["2.weight"].nonfinite_grad == 3
    assert bad.nonfinite["grad"] == 3
    for name, stats in bad.layers.items():
        if name != "2.weight":
            assert stats.nonfinite_grad == 0, name
    before = mon.records[k - 2]
    assert not before.full and before.layers == {} and before.finite
    assert math.isnan(before.param_norm) and before.grad_norm > 0 and before.loss is not None


def test_a_gradient_spike_gets_a_full_record_at_that_step() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    mon = _sparse_cadence_monitor(opt, model)
    k = 16  # after the detector's warm-up of 10 finite norms

    def spike(i: int) -> None:
        if i == k - 1:
            for p in model.parameters():
                assert p.grad is not None
                p.grad.mul_(1e4)

    train(model, opt, batches(k + 1), after_backward=spike)
    mon.close()
    kinds = _kinds(mon)
    assert all(not kinds[s] for s in range(4, k)), kinds
    assert kinds[k] and mon.records[k - 1].layers
    assert mon.records[k - 1].grad_norm > 10 * mon.records[k - 2].grad_norm


def test_a_loss_spike_gets_a_full_record_at_that_step() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    mon = _sparse_cadence_monitor(opt, model)
    k = 15

    def report(i: int, loss: torch.Tensor) -> None:
        mon.record_loss(loss * 1e3 if i == k - 1 else loss)

    train(model, opt, batches(k + 1), after_step=report)
    mon.close()
    kinds = _kinds(mon)
    assert all(not kinds[s] for s in range(4, k)), kinds
    spiked = mon.records[k - 1]
    assert spiked.full and spiked.layers and spiked.step == k
    assert spiked.loss is not None and spiked.loss > 100 * (mon.records[k - 2].loss or 0)


def test_a_loss_spike_after_the_gradients_were_cleared_makes_the_next_step_full() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    mon = _sparse_cadence_monitor(opt, model)
    k = 15

    def report(i: int, loss: torch.Tensor) -> None:
        if i == k - 1:
            opt.zero_grad()  # the step's gradients are gone: its full record can't be taken
            loss = loss * 1e3
        mon.record_loss(loss)

    train(model, opt, batches(k + 1), after_step=report)
    mon.close()
    kinds = _kinds(mon)
    assert not kinds[k] and kinds[k + 1]


@pytest.mark.parametrize("every", [1, 3])
def test_every_n_keeps_the_fixed_cadence_full_records_and_nothing_in_between(every: int) -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    mon = Monitor(opt, model=model, every=every)
    target = model[2].weight

    def poison(i: int) -> None:
        if i == 4:  # step 5: off the every=3 cadence, so no record there (as before)
            assert target.grad is not None
            target.grad[0, 0] = float("nan")

    train(model, opt, batches(7), after_backward=poison)
    mon.close()
    assert [r.step for r in mon.records] == list(range(1, 8, every))
    assert all(r.full and len(r.layers) == 6 for r in mon.records)


def test_the_budget_spaces_full_steps_so_their_amortised_cost_fits() -> None:
    cadence = Cadence(None, 0.03, exact_every=10, max_interval=500)
    assert cadence.due(1)
    cadence.took_full(1)
    assert not cadence.due(2) and cadence.due(3)  # every other step until measured
    for _ in range(5):
        cadence.observe(0.100, 0.001, full=False, exact=False, first=False)  # sentinel 1 ms
        cadence.observe(0.100, 0.021, full=True, exact=False, first=False)  # +20 ms sampled
    cadence.observe(0.100, 0.191, full=True, exact=True, first=False)  # +190 ms exact
    # extra = 20 ms + (190 - 20) / 10 ms = 37 ms; allowance = 3% of 100 ms - 1 ms = 2 ms;
    # 37 / 2 = 18.5 -> a full step every 19 steps
    assert cadence.interval == 19
    starved = Cadence(None, 0.005, max_interval=500)
    starved.observe(0.1, 0.001, full=False, exact=False, first=False)
    starved.observe(0.1, 0.021, full=True, exact=False, first=False)
    assert starved.interval == 500  # the sentinel alone spends the budget
    cheap = Cadence(None, 0.03)
    cheap.observe(0.1, 0.001, full=False, exact=False, first=False)
    cheap.observe(0.1, 0.002, full=True, exact=False, first=False)
    assert cheap.interval == 1  # 1 ms extra fits in a 2 ms allowance: every step


def test_the_detector_flags_non_finite_values_and_spikes_over_the_running_median() -> None:
    detector = AnomalyDetector(Thresholds(grad_spike=10.0, loss_spike=None, window=5, warmup=3))
    assert detector.grad(math.nan) == "nonfinite"
    assert [detector.grad(v) for v in (1.0, 2.0, 1.5)] == [None, None, None]
    assert detector.grad(14.0) is None  # 14 < 10 x median 1.5... of (1, 2, 1.5) = 15
    assert detector.grad(30.0) == "grad_spike"
    assert detector.loss(1e9) is None  # loss spikes turned off
    assert detector.loss(math.inf) == "nonfinite"
    window = RunningMedian(3)
    for v in (5.0, 1.0, 3.0, 2.0):
        window.add(v)
    assert window.median == 2.0 and len(window) == 3


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("overhead", 0),
        ("overhead", math.nan),
        ("grad_spike", 0.5),
        ("spike_window", 0),
        ("max_interval", 0),
        ("every", 0),
    ],
)
def test_bad_budget_knobs_are_refused_naming_the_knob(knob: str, value: object) -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters())
    with pytest.raises(ValueError, match=knob.replace("spike_window", "window")):
        Monitor(opt, model=model, **({"every": None} | {knob: value}))  # type: ignore[arg-type]
