"""`RmswatchCallback` for Lightning 2.x (`pip install 'rmswatch[lightning]'`).

    trainer = lightning.Trainer(
        gradient_clip_val=1.0,
        precision="bf16-mixed",
        callbacks=[RmswatchCallback(job="resnet-retrain", store="sqlite:///rmswatch.db")],
    )
    trainer.fit(model, train_loader, val_loader)

At `on_fit_start` it attaches `rmswatch.watch()` to the trainer's RMSprop, with the module's own
parameter names, the trainer's rank/world size, the precision plugin's GradScaler (16-mixed:
skipped steps and the loss scale) and, when resuming (`fit(..., ckpt_path=...)`), `start_step`
from the checkpoint's `global_step` (Lightning restores its loop state only after
`on_fit_start`, so it is read from the checkpoint Lightning has loaded by then). Then, per
optimizer step:

* **loss**: the `loss` that `training_step` returned. Lightning divides it by
  `accumulate_grad_batches` before backward; the callback adds the micro-batches' shares of one
  optimizer step, so the loss recorded is the **mean over the micro-batches** (no host sync).
* **pre-clip gradient norm**: with `gradient_clip_val` and the "norm" algorithm, Lightning calls
  `clip_grad_norm_` and drops the norm it returns. In `on_before_optimizer_step` (after AMP's
  unscale_, before clipping) the callback computes the same number with the same function
  (`torch.nn.utils.get_total_norm`, which `clip_grad_norm_` calls) over the optimizer's
  gradients, on the device, on telemetry steps only, and hands it to `record_grad_norm` with
  `max_norm=gradient_clip_val`.
* **validation loss**: `trainer.callback_metrics[val_metric]` at the end of each validation run
  (not the sanity check), recorded at the current step.

The run closes with the fit's outcome: `succeeded` at `on_fit_end`, `failed` (with the
exception) at `on_exception`; an interrupted fit (Ctrl-C) closes as `failed` with
"interrupted".
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch

import rmswatch
from rmswatch.integrations import find_rmsprop
from rmswatch.trainer_hooks.monitor import Monitor

log = logging.getLogger(__name__)


def _resumed_step(trainer: pl.Trainer) -> int:
    """The optimizer steps a resumed fit has already taken, known at `on_fit_start`.

    Lightning restores the loop's progress (and so `global_step`) only after `on_fit_start`; the
    checkpoint it is restoring from is already loaded by then, and holds `global_step`.
    """
    if trainer.global_step:
        return int(trainer.global_step)
    connector = getattr(trainer, "_checkpoint_connector", None)
    loaded = getattr(connector, "_loaded_checkpoint", None)
    if isinstance(loaded, dict):
        return int(loaded.get("global_step", 0) or 0)
    return 0


class RmswatchCallback(pl.Callback):
    """Attach rmswatch to a Lightning fit; `watch_options` go to `rmswatch.watch()`."""

    def __init__(
        self,
        job: str = "default",
        store: str | None = None,
        *,
        val_metric: str = "val_loss",
        **watch_options: Any,
    ) -> None:
        super().__init__()
        self.job = job
        self.store = store
        self.val_metric = val_metric
        self.watch_options = watch_options
        self.monitor: Monitor | None = None
        self._loss: torch.Tensor | None = None
        self._global_step = 0

    # -- attach / close ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = find_rmsprop(trainer.optimizers, "the Lightning trainer")
        options = dict(self.watch_options)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if isinstance(scaler, torch.amp.GradScaler):
            options.setdefault("scaler", scaler)
        resumed = _resumed_step(trainer)
        if resumed:
            options.setdefault("start_step", resumed)
        options.setdefault("rank", trainer.global_rank)
        options.setdefault("world_size", trainer.world_size)
        self.monitor = rmswatch.watch(
            optimizer, model=pl_module, job=self.job, store=self.store, **options
        )
        self._global_step = resumed
        self._loss = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the checkpoint's loop state is restored between on_fit_start and here
        monitor = self.monitor
        if monitor is not None and trainer.global_step != monitor.step:
            log.warning(
                "rmswatch: the trainer resumed at step %d but the run's step axis is at %d",
                trainer.global_step,
                monitor.step,
            )
        self._global_step = trainer.global_step

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted:
            self._close("failed", "interrupted")
        else:
            self._close("succeeded")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close("failed", f"{type(exception).__name__}: {exception}")

    def _close(self, status: str, detail: str = "") -> None:
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(status=status, detail=detail)

    # -- per step ---------------------------------------------------------------------------------

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        monitor = self.monitor
        clip = trainer.gradient_clip_val
        if monitor is None or not clip or not monitor.next_step_is_telemetry:
            return
        algorithm = trainer.gradient_clip_algorithm  # None: Lightning's default, "norm"
        if algorithm is not None and str(getattr(algorithm, "value", algorithm)) != "norm":
            return  # clipping by value has no total norm to report
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if grads:
            total = torch.nn.utils.get_total_norm(grads, 2.0)
            monitor.record_grad_norm(total, max_norm=float(clip))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            share = loss.detach()  # already divided by accumulate_grad_batches
            self._loss = share if self._loss is None else self._loss + share
        if trainer.global_step != self._global_step:  # this batch ended an optimizer step
            self._global_step = trainer.global_step
            if self._loss is not None:
                self.monitor.record_loss(self._loss)
            self._loss = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None or self.monitor.closed or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.val_metric)
        if value is not None:
            self.monitor.record_validation(value, name=self.val_metric)
