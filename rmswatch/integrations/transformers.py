"""`RmswatchCallback` for the Hugging Face `Trainer` (`pip install 'rmswatch[transformers]'`).

    args = TrainingArguments(..., optim="rmsprop", logging_steps=1)
    trainer = Trainer(model, args, train_dataset=..., eval_dataset=...,
                      callbacks=[RmswatchCallback(job="bert-finetune", store="sqlite:///rmswatch.db")])
    trainer.train()

At `on_train_begin` it attaches `rmswatch.watch()` to the trainer's RMSprop (inside accelerate's
`AcceleratedOptimizer`), with the model's parameter names, the process index/count, the
GradScaler accelerate uses for `fp16=True` (skipped steps, loss scale) and `start_step` from
`state.global_step` (non-zero when resuming with `resume_from_checkpoint`).

What is recorded comes from the trainer's own logs, at the step they belong to:

* **loss** and **pre-clip gradient norm**: `logs["loss"]` and `logs["grad_norm"]` in `on_log`,
  right after the optimizer step they describe. The trainer's `grad_norm` is what its
  `clip_grad_norm_` returned (before clipping to `max_grad_norm`). The trainer logs every
  `logging_steps`; its `loss` is the mean over the steps since the last log (and over the
  gradient-accumulation micro-batches). Set `logging_steps=1` for a loss and a pre-clip norm at
  every step; with `logging_steps=N` they are recorded at every N-th step only.
* **validation**: `metrics[val_metric]` (default `eval_loss`) in `on_evaluate`.

The run closes `succeeded` at `on_train_end`. The trainer has no exception callback: wrap
`trainer.train()` and call `callback.close("failed", str(exc))` in the `except`, or let the
store's heartbeat mark the run stalled.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import rmswatch
from rmswatch.integrations import find_rmsprop
from rmswatch.trainer_hooks.monitor import Monitor


class RmswatchCallback(TrainerCallback):
    """Attach rmswatch to a `Trainer.train()`; `watch_options` go to `rmswatch.watch()`."""

    def __init__(
        self,
        job: str = "default",
        store: str | None = None,
        *,
        val_metric: str = "eval_loss",
        **watch_options: Any,
    ) -> None:
        self.job = job
        self.store = store
        self.val_metric = val_metric
        self.watch_options = watch_options
        self.monitor: Monitor | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        wrapped = kwargs.get("optimizer")
        optimizer = find_rmsprop([wrapped], "the Hugging Face Trainer")
        options = dict(self.watch_options)
        scaler = getattr(wrapped, "scaler", None)
        if isinstance(scaler, torch.amp.GradScaler):
            options.setdefault("scaler", scaler)
        if state.global_step:
            options.setdefault("start_step", state.global_step)
        options.setdefault("rank", args.process_index)
        options.setdefault("world_size", args.world_size)
        self.monitor = rmswatch.watch(
            optimizer, model=kwargs.get("model"), job=self.job, store=self.store, **options
        )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        monitor = self.monitor
        if monitor is None or monitor.closed or not logs:
            return
        if "loss" in logs:
            monitor.record_loss(float(logs["loss"]))
        grad_norm = logs.get("grad_norm")
        if grad_norm is not None:
            max_norm = args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None
            monitor.record_grad_norm(float(grad_norm), max_norm=max_norm, step=monitor.step)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is None or self.monitor.closed or not metrics:
            return
        value = metrics.get(self.val_metric)
        if value is not None:
            self.monitor.record_validation(float(value), name=self.val_metric)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.close("succeeded")

    def close(self, status: str = "succeeded", detail: str = "") -> None:
        """Close the run (idempotent); for `except` blocks around `trainer.train()`."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(status=status, detail=detail)
