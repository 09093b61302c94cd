"""The Lightning callback on real `Trainer.fit` calls (CPU, tiny model, nothing downloaded)."""

from __future__ import annotations

import math
from typing import Any

# installed by `make test` (extra "lightning"); imported plainly so a missing install fails
import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from rmswatch.integrations.lightning import RmswatchCallback
from rmswatch.trainer_hooks.records import StepRecord, ValidationRecord
from tests.trainer_hooks.support import RecordingSink


class TinyModule(pl.LightningModule):
    def __init__(self, inject_at: tuple[int, ...] = (), fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )
        self.losses: list[float] = []
        self.inject_at = inject_at
        self.fail_at = fail_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == self.fail_at:
            raise RuntimeError("boom at batch 3")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x).float(), y) * 50.0
        self.losses.append(float(loss.detach()))
        return loss

    def on_after_backward(self) -> None:
        if self.trainer.global_step + 1 in self.inject_at:
            grad = self.net[0].weight.grad
            assert grad is not None
            grad[0, :3] = math.inf

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x).float(), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.parameters(), lr=1e-2)


def _loader(n: int = 32, seed: int = 0) -> torch.utils.data.DataLoader[Any]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = torch.randn(n, 1, generator=gen)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def _trainer(callback: RmswatchCallback, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 8,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 1,
        "limit_val_batches": 2,
        "callbacks": [callback],
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def test_fit_records_loss_pre_clip_norm_and_validation_then_closes_succeeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    returned: list[float] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        total = real_clip(*args, **kwargs)
        returned.append(float(total))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    sink = RecordingSink()
    callback = RmswatchCallback(job="lightning-test", sinks=[sink], system_metrics=False)
    module = TinyModule()
    trainer = _trainer(
        callback, gradient_clip_val=0.5, accumulate_grad_batches=2, val_check_interval=4
    )
    trainer.fit(module, _loader(), _loader(8, seed=1))

    steps = sink.of(StepRecord)
    assert [r.step for r in steps] == list(range(1, 9))
    assert sink.run is not None and [li.name for li in sink.run.layers] == [
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
    ]
    # the loss of each optimizer step is the mean of its two micro-batches
    means = [(a + b) / 2 for a, b in zip(module.losses[::2], module.losses[1::2], strict=True)]
    assert [r.loss for r in steps] == pytest.approx(means, rel=1e-6)
    # the pre-clip norm is the one clip_grad_norm_ returned inside Lightning
    assert len(returned) == 8
    for rec, total in zip(steps, returned, strict=True):
        assert rec.grad_norm_before_clip == pytest.approx(total, rel=1e-6)
        assert rec.clipped == (total > 0.5)
    assert any(r.clipped for r in steps)
    validations = sink.of(ValidationRecord)
    assert [v.step for v in validations] == [2, 4, 6, 8]  # every 4 batches = 2 steps; no sanity
    assert validations[-1].value == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    assert sink.status is not None and sink.status.status == "succeeded"
    assert callback.monitor is not None and callback.monitor.closed


def test_a_failing_fit_closes_the_run_as_failed_with_the_exception() -> None:
    sink = RecordingSink()
    callback = RmswatchCallback(job="lightning-test", sinks=[sink], system_metrics=False)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(callback).fit(TinyModule(fail_at=3), _loader())
    assert [r.step for r in sink.of(StepRecord)] == [1, 2, 3]
    assert sink.status is not None and sink.status.status == "failed"
    assert "RuntimeError: boom at batch 3" in sink.status.detail


def test_bf16_mixed_precision_fit_is_recorded() -> None:
    sink = RecordingSink()
    callback = RmswatchCallback(job="lightning-bf16", sinks=[sink], system_metrics=False)
    _trainer(callback, precision="bf16-mixed").fit(TinyModule(), _loader())
    steps = sink.of(StepRecord)
    assert [r.step for r in steps] == list(range(1, 9))
    assert all(r.loss is not None and math.isfinite(r.loss) for r in steps)
    assert all(r.loss_scale is None and not r.skipped for r in steps)  # bf16 needs no scaler


def test_fp16_mixed_precision_with_a_grad_scaler_records_skipped_steps_at_their_step() -> None:
    sink = RecordingSink()
    callback = RmswatchCallback(job="lightning-fp16", sinks=[sink], system_metrics=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    module = TinyModule(inject_at=(3, 6))
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    _trainer(callback, plugins=[plugin]).fit(module, _loader())
    steps = sink.of(StepRecord)
    assert [r.step for r in steps] == list(range(1, 9))
    assert [r.step for r in steps if r.skipped] == [3, 6]
    assert [r.loss for r in steps] == pytest.approx(module.losses, rel=1e-6)
    assert steps[2].layers["net.0.weight"].nonfinite_grad == 3
    assert steps[2].loss_scale == 2.0**10 and steps[3].loss_scale == 2.0**9


def test_a_fit_resumed_from_a_checkpoint_continues_the_step_axis(tmp_path: Any) -> None:
    first = _trainer(
        RmswatchCallback(job="lightning-resume", sinks=[RecordingSink()], system_metrics=False),
        max_steps=4,
        enable_checkpointing=True,
        default_root_dir=str(tmp_path),
    )
    first.fit(TinyModule(), _loader())
    ckpt = tmp_path / "last.ckpt"
    first.save_checkpoint(ckpt)
    sink = RecordingSink()
    callback = RmswatchCallback(job="lightning-resume", sinks=[sink], system_metrics=False)
    _trainer(callback, max_steps=8).fit(TinyModule(), _loader(), ckpt_path=str(ckpt))
    assert sink.run is not None and sink.run.resumed_from_step == 4
    assert [r.step for r in sink.of(StepRecord)] == [5, 6, 7, 8]
