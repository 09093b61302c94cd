"""Monitor behaviour: records, sinks, cadence, bad input, closing, dropping."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import pytest
import torch

import rmswatch
from rmswatch.trainer_hooks import CheckpointRecord, Monitor, StepRecord, ValidationRecord
from rmswatch.trainer_hooks.records import Telemetry
from tests.helpers import wait_until
from tests.trainer_hooks.support import (
    BlockingSink,
    FailingSink,
    RecordingSink,
    batches,
    tiny_model,
    train,
)


def _setup(**kw: object) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = tiny_model()
    return model, torch.optim.RMSprop(model.parameters(), lr=1e-2, **kw)  # type: ignore[arg-type]


def test_each_step_gives_a_record_with_loss_named_layers_and_run_info_to_sinks() -> None:
    model, opt = _setup()
    sink = RecordingSink()
    with rmswatch.watch(
        opt, model=model, job="unit", sinks=[sink], labels={"team": "x"}, system_metrics=False
    ) as mon:
        train(model, opt, batches(3), after_step=lambda i, loss: mon.record_loss(loss))
        assert mon.flush(timeout=10)
    assert [r.step for r in sink.steps] == [1, 2, 3]
    record = sink.steps[-1]
    assert record.loss is not None and math.isfinite(record.loss)
    assert set(record.layers) == {n for n, _ in model.named_parameters()}
    assert record.lr == pytest.approx(1e-2) and record.lrs == (pytest.approx(1e-2),)
    assert record.step_seconds is not None and record.step_seconds >= 0
    assert record.grad_norm > 0 and record.update_norm > 0 and record.param_norm > 0
    run = sink.run
    assert run is not None and run.job == "unit" and run.optimizer == "RMSprop"
    assert run.labels == {"team": "x"} and run.pid > 0 and run.host
    assert [layer.name for layer in run.layers] == [n for n, _ in model.named_parameters()]
    assert run.hyperparameters[0]["alpha"] == 0.99 and run.world_size == 1
    assert sink.status is not None and sink.status.status == "succeeded"
    assert mon.records == sink.steps


def test_without_a_model_layers_are_named_by_group_and_position() -> None:
    model = tiny_model()
    params = list(model.parameters())
    opt = torch.optim.RMSprop([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}])
    mon = Monitor(opt)
    train(model, opt, batches(1))
    mon.flush()
    record = mon.records[0]
    assert list(record.layers)[:3] == ["group0.param0", "group0.param1", "group1.param0"]
    assert record.lrs == (pytest.approx(0.01), pytest.approx(0.1))
    mon.close()


def test_every_n_steps_records_steps_one_then_every_nth() -> None:
    model, opt = _setup()
    mon = Monitor(opt, every=3)
    train(model, opt, batches(7))
    mon.flush()
    assert [r.step for r in mon.records] == [1, 4, 7]
    assert mon.step == 7
    mon.close()


def test_records_are_bounded_by_keep_records() -> None:
    model, opt = _setup()
    mon = Monitor(opt, keep_records=2)
    train(model, opt, batches(5))
    mon.flush()
    assert [r.step for r in mon.records] == [4, 5]
    mon.close()


def test_loss_tensor_is_read_with_the_step_and_a_non_scalar_loss_is_refused() -> None:
    model, opt = _setup()
    mon = Monitor(opt)
    losses: list[float] = []

    def after(i: int, loss: torch.Tensor) -> None:
        mon.record_loss(loss)
        losses.append(float(loss.detach()))

    train(model, opt, batches(2), after_step=after)
    mon.flush()
    assert [r.loss for r in mon.records] == pytest.approx(losses)
    with pytest.raises(ValueError, match="scalar"):
        mon.record_loss(torch.ones(3))
    with pytest.raises(ValueError, match="float or a one-element tensor"):
        mon.record_loss("0.5")  # type: ignore[arg-type]
    mon.close()


def test_non_finite_loss_is_counted() -> None:
    model, opt = _setup()
    mon = Monitor(opt)
    train(model, opt, batches(1), after_step=lambda i, loss: mon.record_loss(float("nan")))
    mon.flush()
    assert mon.records[0].nonfinite["loss"] == 1 and not mon.records[0].finite
    mon.close()


def test_validation_and_checkpoint_records_reach_the_sinks() -> None:
    model, opt = _setup()
    sink = RecordingSink()
    mon = Monitor(opt, sinks=[sink])
    train(model, opt, batches(2))
    mon.record_validation(torch.tensor(0.25))
    mon.record_checkpoint("save", seconds=1.5, size_bytes=10, path="/tmp/ck.pt")
    mon.record_checkpoint("load", step=1, ok=False, detail="shape mismatch")
    mon.close()
    (val,) = sink.of(ValidationRecord)
    assert (val.step, val.value, val.name) == (2, 0.25, "val_loss")
    assert sink.steps[-1].validation == 0.25
    save, load = sink.of(CheckpointRecord)
    assert (save.action, save.step, save.size_bytes, save.path) == ("save", 2, 10, "/tmp/ck.pt")
    assert (load.action, load.step, load.ok, load.detail) == ("load", 1, False, "shape mismatch")
    with pytest.raises(ValueError, match="'save' or 'load'"):
        Monitor(opt).record_checkpoint("delete")  # type: ignore[arg-type]


def test_sgd_is_refused_naming_the_class_and_what_is_supported() -> None:
    model = tiny_model()
    with pytest.raises(
        TypeError, match=r"torch\.optim\.sgd\.SGD.*supported: torch\.optim\.RMSprop"
    ):
        rmswatch.watch(torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"every": 0}, "every"),
        ({"keep_records": 0}, "keep_records"),
        ({"queue_size": 0}, "queue_size"),
        ({"exact_every": 0}, "exact_every"),
        ({"job": ""}, "job"),
    ],
)
def test_bad_knobs_are_refused_naming_the_field(kw: dict[str, object], field: str) -> None:
    _, opt = _setup()
    with pytest.raises(ValueError, match=field):
        Monitor(opt, **kw)  # type: ignore[arg-type]


def test_after_close_hooks_are_gone_and_calls_warn_and_do_nothing() -> None:
    model, opt = _setup()
    sink = RecordingSink()
    mon = Monitor(opt, sinks=[sink])
    train(model, opt, batches(1))
    mon.close()
    train(model, opt, batches(2))
    assert mon.step == 1 and len(mon.records) == 1
    for call in (
        lambda: mon.record_loss(1.0),
        lambda: mon.record_validation(1.0),
        lambda: mon.record_checkpoint("save"),
        lambda: mon.flush(),
        lambda: mon.close(),
    ):
        with pytest.warns(RuntimeWarning, match="closed"):
            call()
    assert len(sink.items) == 1


def test_an_exception_in_the_with_block_closes_the_run_as_failed() -> None:
    model, opt = _setup()
    sink = RecordingSink()
    with pytest.raises(KeyError), rmswatch.watch(opt, sinks=[sink], system_metrics=False):
        train(model, opt, batches(1))
        raise KeyError("boom")
    assert sink.status is not None and sink.status.status == "failed"
    assert "KeyError" in sink.status.detail


def test_a_full_queue_drops_and_counts_without_blocking_the_step() -> None:
    model, opt = _setup()
    sink = BlockingSink()
    mon = Monitor(opt, sinks=[sink], queue_size=2)
    train(model, opt, batches(1))
    mon.record_validation(0.0)  # completes step 1 and wakes the sink thread
    assert sink.entered.wait(timeout=10)
    # The sink thread is stuck inside write(); two more fit in the queue, the rest drop.
    train(model, opt, batches(6))
    mon.record_validation(1.0)
    assert mon.step == 7
    assert mon.dropped >= 3
    sink.release.set()
    assert mon.flush(timeout=10)
    dropped = mon.dropped
    train(model, opt, batches(1))  # built after the drops: carries their count
    mon.close()
    assert sink.steps[-1].step == 8 and sink.steps[-1].dropped_total == dropped
    assert len(sink.steps) < 8
    assert len(mon.records) == 8  # in-memory records never drop


def test_sink_exceptions_never_reach_training_and_are_counted() -> None:
    model, opt = _setup()
    broken = FailingSink()
    good = RecordingSink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon = Monitor(opt, sinks=[broken, good])
        train(model, opt, batches(3))
        assert mon.flush(timeout=10)
        mon.close()
    assert broken.calls[0] == "open" and "close" in broken.calls
    assert mon.sink_errors >= 4
    assert len(good.steps) == 3


def test_samplers_are_polled_on_the_sink_thread_and_their_output_written() -> None:
    model, opt = _setup()
    sink = RecordingSink()
    polled: list[int] = []

    def sampler() -> rmswatch.trainer_hooks.SystemSample:
        polled.append(1)
        return rmswatch.trainer_hooks.SystemSample(time=0.0, cpu_percent=1.0, rss_bytes=1)

    mon = Monitor(opt, sinks=[sink], samplers=[sampler], sample_interval=0.05)
    wait_until(lambda: len(polled) >= 2, timeout=10, what="two sampler polls")
    mon.close()
    assert len(sink.of(rmswatch.trainer_hooks.SystemSample)) >= 2


def test_step_record_is_built_from_a_real_step() -> None:
    model, opt = _setup()
    mon = Monitor(opt, model=model)
    train(model, opt, batches(1))
    mon.close()
    (record,) = mon.records
    assert isinstance(record, StepRecord) and record.step == 1 and record.finite


def test_records_reach_the_sinks_without_a_flush_in_batches() -> None:
    """The sink thread collects queued records every wake interval, not once per record."""
    from rmswatch.trainer_hooks.dispatch import Dispatcher
    from rmswatch.trainer_hooks.records import RunInfo, RunStatus

    class CountingSink(RecordingSink):
        writes = 0

        def write(self, items: Sequence[Telemetry]) -> None:
            self.writes += 1
            super().write(items)

    sink = CountingSink()
    dispatcher = Dispatcher(RunInfo("job", "run", 0.0), [sink], wake_interval=0.05)
    dispatcher.start()
    for i in range(5):
        dispatcher.offer(ValidationRecord(i, float(i), 0.5))
    wait_until(lambda: len(sink.items) == 5, timeout=10, what="records delivered without flush")
    assert sink.writes <= 2  # one batch (two if a wake interval ended between the offers)
    dispatcher.close(RunStatus(1.0, "succeeded"), timeout=10)
    assert sink.status is not None and sink.status.status == "succeeded"
