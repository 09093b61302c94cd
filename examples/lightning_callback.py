"""A Lightning-style callback: attach rmswatch to the trainer's RMSProp optimizer.

Lightning calls these hook names on any object passed in `Trainer(callbacks=[...])`; the class
does not import Lightning, so it also serves hand-written loops that call the same hooks
(the demo at the bottom does exactly that).

    trainer = lightning.Trainer(callbacks=[RmswatchCallback(job="resnet-retrain",
                                                            store="sqlite:///rmswatch.db")])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import rmswatch


class RmswatchCallback:
    def __init__(self, job: str, store: str | None = None, **watch_options: Any) -> None:
        self.job = job
        self.store = store
        self.watch_options = watch_options
        self.monitor: rmswatch.Monitor | None = None

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        (optimizer,) = trainer.optimizers
        self.monitor = rmswatch.watch(
            optimizer, model=pl_module, job=self.job, store=self.store, **self.watch_options
        )

    def on_train_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor is not None and outputs is not None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.monitor.record_loss(loss.detach())

    def on_validation_end(self, trainer: Any, pl_module: nn.Module) -> None:
        val = getattr(trainer, "callback_metrics", {}).get("val_loss")
        if self.monitor is not None and val is not None:
            self.monitor.record_validation(float(val))

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.close(status="failed", detail=f"{type(exception).__name__}: {exception}")
            self.monitor = None

    def on_train_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.monitor is not None:
            self.monitor.close(status="succeeded")
            self.monitor = None


class _MiniTrainer:
    """Just enough of a trainer to drive the callback without Lightning installed."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizers = [optimizer]
        self.callback_metrics: dict[str, float] = {}


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    trainer = _MiniTrainer(optimizer)
    callback = RmswatchCallback(job="lightning-style", store=None)
    callback.on_train_start(trainer, model)
    x, y = torch.randn(512, 8), torch.randn(512, 1)
    for batch_idx in range(100):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        callback.on_train_batch_end(trainer, model, {"loss": loss}, None, batch_idx)
    assert callback.monitor is not None
    callback.monitor.flush()
    print(
        f"{len(callback.monitor.records)} records; last grad norm "
        f"{callback.monitor.records[-1].grad_norm:.4f}"
    )
    callback.on_train_end(trainer, model)


if __name__ == "__main__":
    main()
