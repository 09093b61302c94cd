"""Monitor: attaches to an optimizer's step hooks and turns each telemetry step into a StepRecord.

The post-step hook computes statistics on the parameters' device (`stats.StatsEngine`); the
record is completed one step later (or at `flush()`), when the loss recorded for that step and,
on CUDA, the non-blocking copy of the packed statistics have arrived. Records go to the sinks
through `dispatch.Dispatcher`, which never makes the training thread wait.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from rmswatch.trainer_hooks.adapters import adapter_for
from rmswatch.trainer_hooks.dispatch import Dispatcher, Sampler
from rmswatch.trainer_hooks.distributed import (
    DEFAULT_DESYNC_EVERY,
    DEFAULT_TIMEOUT_SECONDS,
    RankChecks,
    refuse_sharded_parameters,
)
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    RUN_STATUSES,
    CheckpointRecord,
    LayerInfo,
    RankCheckRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    Telemetry,
    ValidationRecord,
)
from rmswatch.trainer_hooks.sinks import Sink
from rmswatch.trainer_hooks.stats import Packed, Slot, StatsEngine, decode, ratio

# Exact full-tensor distributions on the CPU cost more than the step budget; see docs/hooks.md.
DEFAULT_EXACT_EVERY_CPU = 50


@dataclass
class _Pending:
    step: int
    time: float
    step_seconds: float | None
    packed: Packed
    values: list[float] | None = None  # CPU path: read synchronously
    host: torch.Tensor | None = None  # CUDA path: pinned copy in flight
    event: Any = None
    loss: float | torch.Tensor | None = None
    loss_event: Any = None
    validation: float | None = None

    def ready(self) -> bool:
        return (self.event is None or bool(self.event.query())) and (
            self.loss_event is None or bool(self.loss_event.query())
        )

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()
        if self.loss_event is not None:
            self.loss_event.synchronize()


class Monitor:
    """Telemetry hooks on one optimizer; see `rmswatch.watch` for the usual way in.

    Knobs: `every` (telemetry cadence in optimizer steps; steps 1, 1+every, ...),
    `exact_every` (exact full-tensor distributions every this many telemetry steps, sampled in
    between; default 1 on CUDA, 50 on CPU), `sample_size`/`sample_seed` (the fixed per-layer
    sample), `queue_size` (sink queue bound; full -> dropped and counted), `keep_records`
    (bound of `records`), `sample_interval` (seconds between sampler polls), `stats_threads`
    (intra-op threads for the CPU statistics; None keeps torch's setting), `chunk_bytes` (scratch
    size of the chunked CPU update-norm pass; 0 turns it off), `kernel` ("eager", or "compiled":
    the CPU norm pass as a torch.compile'd kernel, compiled at the first telemetry step).
    Under torch.distributed: `desync_every` (compare the ranks' optimizer state every this many
    steps; None turns it off) and `dist_timeout` (seconds, the telemetry gloo group's timeout).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        model: torch.nn.Module | None = None,
        job: str = "default",
        run_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        every: int = 1,
        sinks: Iterable[Sink] = (),
        samplers: Sequence[Sampler] = (),
        queue_size: int = 1024,
        keep_records: int = 1000,
        sample_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        rank: int | None = None,
        world_size: int | None = None,
        exact_every: int | None = None,
        sample_size: int = 4096,
        sample_seed: int = 0,
        stats_threads: int | None = None,
        chunk_bytes: int = 1 << 20,
        kernel: str = "eager",
        desync_every: int | None = DEFAULT_DESYNC_EVERY,
        dist_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._adapter = adapter_for(optimizer)
        for name, value, low in (
            ("every", every, 1),
            ("keep_records", keep_records, 1),
            ("queue_size", queue_size, 1),
            ("sample_size", sample_size, 1),
        ):
            _check_int(name, value, low)
        if exact_every is not None:
            _check_int("exact_every", exact_every, 1)
        if stats_threads is not None:
            _check_int("stats_threads", stats_threads, 1)
        if desync_every is not None:
            _check_int("desync_every", desync_every, 1)
        self._stats_threads = stats_threads
        if not isinstance(job, str) or not job:
            raise ValueError(f"job={job!r}: expected a non-empty string")
        self._optimizer = optimizer
        self._clock = clock
        self._every = every
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self._device = params[0].device if params else torch.device("cpu")
        self._cuda = self._device.type == "cuda"
        self._exact_every = exact_every or (1 if self._cuda else DEFAULT_EXACT_EVERY_CPU)
        slots = _slots(optimizer, model)
        refuse_sharded_parameters([s.param for s in slots], [s.name for s in slots])
        self._engine = StatsEngine(
            self._adapter,
            optimizer,
            slots,
            device=self._device,
            sample_size=sample_size,
            sample_seed=sample_seed,
            chunk_bytes=chunk_bytes,
            kernel=kernel,
        )
        # torch.distributed: a telemetry group of its own, the agreed run_id, the desync check
        self._ranks = RankChecks.join(
            optimizer,
            [s.name for s in slots],
            [s.param for s in slots],
            desync_every=desync_every,
            timeout=dist_timeout,
            clock=clock,
        )
        if run_id is None and self._ranks is not None:
            run_id = self._ranks.agree_run_id(uuid.uuid4().hex)
        self._rank_checks: deque[RankCheckRecord] = deque(maxlen=keep_records)
        self._run_info = self._build_run_info(job, run_id, labels, rank, world_size)
        self._records: deque[StepRecord] = deque(maxlen=keep_records)
        self._pending: deque[_Pending] = deque()
        self._step = 0
        self._telemetry_steps = 0
        self._last_step_end: float | None = None
        self._sparse_grads = 0
        self._closed = False
        sinks = list(sinks)
        self._dispatcher: Dispatcher | None = None
        if sinks or samplers:
            self._dispatcher = Dispatcher(
                self._run_info,
                sinks,
                samplers=samplers,
                queue_size=queue_size,
                sample_interval=sample_interval,
            )
            self._dispatcher.start()
        self._handles: list[RemovableHandle] = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    # -- properties ----------------------------------------------------------------------------

    @property
    def records(self) -> list[StepRecord]:
        """The most recent completed StepRecords (at most `keep_records`)."""
        return list(self._records)

    @property
    def dropped(self) -> int:
        return self._dispatcher.dropped if self._dispatcher else 0

    @property
    def sink_errors(self) -> int:
        return self._dispatcher.errors if self._dispatcher else 0

    @property
    def sparse_grads(self) -> int:
        """Sparse gradients seen at step time (parameter-steps), see docs/hooks.md."""
        return self._sparse_grads

    @property
    def step(self) -> int:
        """Optimizer steps completed since the monitor was attached."""
        return self._step

    @property
    def run_id(self) -> str:
        return self._run_info.run_id

    @property
    def job(self) -> str:
        return self._run_info.job

    @property
    def run_info(self) -> RunInfo:
        return self._run_info

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rank_checks(self) -> list[RankCheckRecord]:
        """Completed cross-rank desync checks (torch.distributed only; see docs/hooks.md)."""
        return list(self._rank_checks)

    @property
    def desync_checks_stopped(self) -> str | None:
        """Why the desync checks stopped (ranks stepping unevenly), None while they run."""
        return self._ranks.stopped if self._ranks is not None else None

    # -- hooks ---------------------------------------------------------------------------------

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        # RMSprop raises on sparse gradients inside step(); count them before it does.
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    self._sparse_grads += 1
        self._complete(wait=False)

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._step += 1
        if self._ranks is not None:
            self._rank_checked(self._ranks.after_step(self._step))
        now = time.perf_counter()
        step_seconds = None if self._last_step_end is None else now - self._last_step_end
        self._last_step_end = now
        if (self._step - 1) % self._every:
            return
        exact = self._telemetry_steps % self._exact_every == 0
        self._telemetry_steps += 1
        packed = self._compute(exact)
        pending = _Pending(self._step, self._clock(), step_seconds, packed)
        if self._cuda:
            host = torch.empty(packed.buffer.shape, dtype=torch.float64, pin_memory=True)
            host.copy_(packed.buffer, non_blocking=True)
            pending.host = host
            pending.event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            pending.event.record()
        else:
            pending.values = packed.buffer.tolist()
        self._pending.append(pending)

    def _compute(self, exact: bool) -> Packed:
        # By default the statistics use training's own thread count (measured faster on a quiet
        # machine); stats_threads=1 avoids OpenMP wake-up stalls on an oversubscribed one.
        threads = torch.get_num_threads()
        if self._cuda or self._stats_threads is None or self._stats_threads >= threads:
            return self._engine.compute(exact=exact)
        torch.set_num_threads(self._stats_threads)
        try:
            return self._engine.compute(exact=exact)
        finally:
            torch.set_num_threads(threads)

    # -- user calls ----------------------------------------------------------------------------

    def record_loss(self, loss: torch.Tensor | float) -> None:
        """The loss of the step that just ran; read later with the step's statistics (no sync)."""
        if self._warn_closed("record_loss"):
            return
        value: float | torch.Tensor
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(
                    f"record_loss: loss must be a scalar (one element), got shape "
                    f"{tuple(loss.shape)}"
                )
            value = loss.detach().reshape(())
        elif isinstance(loss, (int, float)) and not isinstance(loss, bool):
            value = float(loss)
        else:
            raise ValueError(
                f"record_loss: loss must be a float or a one-element tensor, got "
                f"{type(loss).__name__}"
            )
        pending = self._pending[-1] if self._pending else None
        if pending is None or pending.step != self._step:
            return  # not a telemetry step
        if isinstance(value, torch.Tensor) and value.device.type == "cuda":
            host = torch.empty((), dtype=value.dtype, pin_memory=True)
            host.copy_(value, non_blocking=True)
            pending.loss_event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            pending.loss_event.record()
            value = host
        pending.loss = value

    def record_validation(
        self, value: torch.Tensor | float, step: int | None = None, name: str = "val_loss"
    ) -> None:
        """A validation metric at `step` (default: the current step); goes to every sink."""
        if self._warn_closed("record_validation"):
            return
        number = float(value.detach().reshape(())) if isinstance(value, torch.Tensor) else value
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            raise ValueError(f"record_validation: value must be a number, got {value!r}")
        at = self._step if step is None else _check_int("step", step, 0)
        for pending in self._pending:
            if pending.step == at:
                pending.validation = float(number)
        self._offer(ValidationRecord(at, self._clock(), float(number), name))

    def record_checkpoint(
        self,
        action: Literal["save", "load"] = "save",
        *,
        step: int | None = None,
        ok: bool = True,
        seconds: float | None = None,
        size_bytes: int | None = None,
        path: str = "",
        detail: str = "",
    ) -> None:
        """A checkpoint save or load (ok=False with `detail` for a failure) to every sink."""
        if self._warn_closed("record_checkpoint"):
            return
        if action not in ("save", "load"):
            raise ValueError(f"record_checkpoint: action={action!r}; expected 'save' or 'load'")
        at = self._step if step is None else _check_int("step", step, 0)
        self._offer(
            CheckpointRecord(
                at, self._clock(), action, ok, seconds, size_bytes, os.fspath(path), detail
            )
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Complete every pending record and deliver everything through the sinks' flush.

        Returns False when `timeout` passed before the sinks were done.
        """
        if self._warn_closed("flush"):
            return True
        self._complete(wait=True)
        return self._dispatcher.flush(timeout) if self._dispatcher else True

    def close(
        self, status: str = "succeeded", detail: str = "", timeout: float | None = 30.0
    ) -> None:
        """Remove the hooks, deliver everything, and close every sink with `status`."""
        if status not in RUN_STATUSES:
            raise ValueError(f"close: status={status!r}; expected one of {', '.join(RUN_STATUSES)}")
        if self._warn_closed("close"):
            return
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._complete(wait=True)
        if self._ranks is not None:
            self._rank_checked(self._ranks.close())
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.close(RunStatus(self._clock(), status, detail), timeout)  # type: ignore[arg-type]

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc is None:
            self.close("succeeded")
        else:
            self.close("failed", detail=f"{type(exc).__name__}: {exc}")

    # -- internals -----------------------------------------------------------------------------

    def _warn_closed(self, what: str) -> bool:
        if self._closed:
            warnings.warn(
                f"rmswatch Monitor({self.job}/{self.run_id}) is closed; {what}() does nothing",
                RuntimeWarning,
                stacklevel=3,
            )
        return self._closed

    def _rank_checked(self, records: list[RankCheckRecord]) -> None:
        for record in records:
            self._rank_checks.append(record)
            if self._run_info.rank == 0:  # every rank sees the same gather; one reports it
                self._offer(record)

    def _offer(self, item: Telemetry) -> None:
        if self._dispatcher is not None:
            self._dispatcher.offer(item)

    def _complete(self, *, wait: bool) -> None:
        """Turn pending steps into StepRecords; without `wait`, only those already arrived."""
        while self._pending:
            pending = self._pending[0]
            if not wait and not pending.ready():
                break
            pending.wait()
            self._pending.popleft()
            record = self._build(pending)
            self._records.append(record)
            self._offer(record)

    def _build(self, pending: _Pending) -> StepRecord:
        values = pending.values if pending.values is not None else pending.host.tolist()  # type: ignore[union-attr]
        layers, global_q, lrs = decode(pending.packed, values, RMS_EDGES)
        loss: float | None = None
        if pending.loss is not None:
            loss = float(pending.loss)
        grad_sq = sum(s.grad_norm**2 for s in layers.values())
        param_sq = sum(s.param_norm**2 for s in layers.values())
        update_sq = sum(s.update_norm**2 for s in layers.values())
        with_eff = [s for s in layers.values() if s.eff_lr_mean is not None]
        total = sum(s.numel for s in with_eff)
        eff_mean = (
            sum(s.numel * s.eff_lr_mean for s in with_eff if s.eff_lr_mean is not None) / total
            if total
            else None
        )
        param_norm = math.sqrt(param_sq)
        update_norm = math.sqrt(update_sq)
        return StepRecord(
            step=pending.step,
            time=pending.time,
            loss=loss,
            grad_norm=math.sqrt(grad_sq),
            param_norm=param_norm,
            update_norm=update_norm,
            lr=lrs[0] if lrs else math.nan,
            step_seconds=pending.step_seconds,
            nonfinite={
                "grad": sum(s.nonfinite_grad for s in layers.values()),
                "param": sum(s.nonfinite_param for s in layers.values()),
                "state": sum(s.nonfinite_state for s in layers.values()),
                "loss": 0 if loss is None or math.isfinite(loss) else 1,
            },
            layers=layers,
            lrs=tuple(lrs),
            update_ratio=ratio(update_norm, param_norm),
            eff_lr_mean=eff_mean,
            eff_lr_min=min(
                (s.eff_lr_min for s in with_eff if s.eff_lr_min is not None), default=None
            ),
            eff_lr_p50=global_q.get("eff_lr_p50"),
            eff_lr_p95=global_q.get("eff_lr_p95"),
            eff_lr_max=max(
                (s.eff_lr_max for s in with_eff if s.eff_lr_max is not None), default=None
            ),
            validation=pending.validation,
            dropped_total=self.dropped,
            rank=self._run_info.rank,
        )

    def _build_run_info(
        self,
        job: str,
        run_id: str | None,
        labels: Mapping[str, str] | None,
        rank: int | None,
        world_size: int | None,
    ) -> RunInfo:
        dist_rank, dist_world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            dist_rank, dist_world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        hyper = tuple(
            {k: _plain(g[k]) for k in self._adapter.hyperparameters if k in g}
            for g in self._optimizer.param_groups
        )
        layers = tuple(
            LayerInfo(
                s.name,
                tuple(s.param.shape),
                str(s.param.dtype).removeprefix("torch."),
                s.group,
                s.numel,
            )
            for s in self._engine.slots
        )
        return RunInfo(
            job=job,
            run_id=run_id or uuid.uuid4().hex,
            started_at=self._clock(),
            labels=dict(labels or {}),
            rank=dist_rank if rank is None else rank,
            world_size=dist_world if world_size is None else world_size,
            host=socket.gethostname(),
            pid=os.getpid(),
            optimizer=type(self._optimizer).__name__,
            hyperparameters=hyper,
            layers=layers,
            hist_edges=RMS_EDGES,
            every=self._every,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu()) if value.numel() == 1 else value.tolist()
    return value


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
    return value


def _slots(optimizer: torch.optim.Optimizer, model: torch.nn.Module | None) -> list[Slot]:
    names: dict[int, str] = {}
    if model is not None:
        names = {id(p): n for n, p in model.named_parameters()}
    slots: list[Slot] = []
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            name = names.get(id(p), f"group{gi}.param{pi}")
            slots.append(Slot(name, p, gi, p.numel()))
    return slots
