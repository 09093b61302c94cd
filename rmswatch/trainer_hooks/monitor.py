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
from rmswatch.trainer_hooks.packing import Packed, Packer, Slot, decode
from rmswatch.trainer_hooks.plan import StatsPlan, choose_plan
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    RUN_STATUSES,
    CheckpointRecord,
    LayerInfo,
    RunInfo,
    RunStatus,
    StepRecord,
    Telemetry,
    ValidationRecord,
    update_ratio,
)
from rmswatch.trainer_hooks.sentinel import (
    DEFAULT_MAX_INTERVAL,
    DEFAULT_OVERHEAD,
    AnomalyDetector,
    Cadence,
    Sentinel,
    Thresholds,
)
from rmswatch.trainer_hooks.sinks import Sink
from rmswatch.trainer_hooks.stats import StatsEngine


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
    full: bool = True  # False: a sentinel-only record (loss, global grad norm, finiteness)
    anomaly: str | None = None  # why the sentinel made this step full, if it did

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

    Knobs: `every` (fixed telemetry cadence in optimizer steps: steps 1, 1+every, ..., and no
    record in between; None: the overhead budget, below), `overhead` (budget mode: the fraction
    of bare step time full telemetry may cost, amortised; every step still gets a sentinel
    record, and an anomalous step a full one), `grad_spike`/`loss_spike`/`spike_window` (what
    the sentinel calls a spike, see `sentinel.Thresholds`), `max_interval` (budget mode: at
    least one full record per this many steps),
    `exact_every` (exact full-tensor distributions every this many telemetry steps, sampled in
    between; default 1 on CUDA, 50 on CPU), `sample_size`/`sample_seed` (the fixed per-layer
    sample), `queue_size` (sink queue bound; full -> dropped and counted), `keep_records`
    (bound of `records`), `sample_interval` (seconds between sampler polls), `stats_threads`
    (intra-op threads for the CPU statistics; None keeps torch's setting), `chunk_bytes` (scratch
    size of the chunked CPU update-norm pass; 0 turns it off), `kernel` ("eager", or "compiled":
    the CPU norm pass as a torch.compile'd kernel, compiled at the first telemetry step).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        model: torch.nn.Module | None = None,
        job: str = "default",
        run_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        every: int | None = 1,
        overhead: float = DEFAULT_OVERHEAD,
        grad_spike: float | None = 10.0,
        loss_spike: float | None = 3.0,
        spike_window: int = 50,
        max_interval: int = DEFAULT_MAX_INTERVAL,
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
    ) -> None:
        self._adapter = adapter_for(optimizer)
        for name, value, low in (
            ("keep_records", keep_records, 1),
            ("queue_size", queue_size, 1),
            ("sample_size", sample_size, 1),
        ):
            _check_int(name, value, low)
        if every is not None:
            _check_int("every", every, 1)
        if exact_every is not None:
            _check_int("exact_every", exact_every, 1)
        if stats_threads is not None:
            _check_int("stats_threads", stats_threads, 1)
        self._stats_threads = stats_threads
        if not isinstance(job, str) or not job:
            raise ValueError(f"job={job!r}: expected a non-empty string")
        self._optimizer = optimizer
        self._clock = clock
        self._every = every
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self._device = params[0].device if params else torch.device("cpu")
        self._cuda = self._device.type == "cuda"
        plan = choose_plan(
            self._device,
            chunk_bytes=chunk_bytes,
            kernel=kernel,
            exact_every=exact_every,
            sample_size=sample_size,
        )
        self._engine = StatsEngine(
            self._adapter, optimizer, _slots(optimizer, model), plan, sample_seed=sample_seed
        )
        self._cadence = Cadence(
            every, overhead, exact_every=plan.exact_every, max_interval=max_interval
        )
        self._detector = AnomalyDetector(Thresholds(grad_spike, loss_spike, spike_window))
        self._sentinel = Sentinel(self._engine.slots)
        # Budget-mode bookkeeping: seconds spent in rmswatch since the last post-step hook
        # began, and what that step was; the next post-step hook reports them to the cadence.
        self._hook_seconds = 0.0
        self._prev: tuple[bool, bool, bool] | None = None  # (full, exact, first)
        self._force_full: str | None = None  # CUDA: a verdict read late makes the next step full
        self._step_grads: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        self._run_info = self._build_run_info(job, run_id, labels, rank, world_size)
        self._records: deque[StepRecord] = deque(maxlen=keep_records)
        self._pending: deque[_Pending] = deque()
        self._step = 0
        self._telemetry_steps = 0
        self._last_paths: dict[str, str] = {}
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
    def full_steps(self) -> int:
        """Steps that got full telemetry so far (every record, in every=N mode)."""
        return self._cadence.full_steps

    @property
    def full_interval(self) -> int:
        """Steps between scheduled full-telemetry steps now (budget mode: as measured so far;
        anomalous steps come on top)."""
        return self._cadence.interval

    @property
    def stats_plan(self) -> StatsPlan:
        """How the statistics are computed (chosen at construction; see `plan.StatsPlan`)."""
        return self._engine.plan

    @property
    def layer_paths(self) -> dict[str, str]:
        """Layer name -> how its norms were computed at the newest telemetry step so far
        ("fused", "foreach" or "per-layer"; see `packing.LAYER_PATHS`); empty before one."""
        return dict(self._last_paths)

    @property
    def run_info(self) -> RunInfo:
        return self._run_info

    @property
    def closed(self) -> bool:
        return self._closed

    # -- hooks ---------------------------------------------------------------------------------

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        start = time.perf_counter()
        # RMSprop raises on sparse gradients inside step(); count them before it does.
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    self._sparse_grads += 1
        self._complete(wait=False)
        self._hook_seconds += time.perf_counter() - start

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._step += 1
        now = time.perf_counter()
        step_seconds = None if self._last_step_end is None else now - self._last_step_end
        self._last_step_end = now
        if not self._cadence.budgeted:
            if not self._cadence.due(self._step):
                return
            pending = _Pending(self._step, self._clock(), step_seconds, self._full_stats())
            self._cadence.took_full(self._step)
            self._ship(pending)
            return
        if step_seconds is not None and self._prev is not None:
            full, exact, first = self._prev
            cost = self._hook_seconds
            self._cadence.observe(step_seconds - cost, cost, full=full, exact=exact, first=first)
        self._hook_seconds = 0.0
        self._budgeted_step(step_seconds)
        self._hook_seconds += time.perf_counter() - now

    def _budgeted_step(self, step_seconds: float | None) -> None:
        """Budget mode: the sentinel every step; full telemetry when due or anomalous."""
        total, grads = self._sentinel.grad_norm()
        anomaly = self._force_full
        self._force_full = None
        if total is not None and not self._cuda:  # reading a CPU value costs nothing
            anomaly = self._detector.grad(float(total)) or anomaly
        full = anomaly is not None or self._cadence.due(self._step)
        exact = False
        if full:
            exact = self._engine.plan.exact_at(self._telemetry_steps)
            packed = self._full_stats()
            self._cadence.took_full(self._step)
            self._step_grads = []
        else:
            packed = self._sentinel_packed(total)
            # A loss spike seen in record_loss can still make this step full, if the
            # gradients are still this step's (not cleared or overwritten since).
            self._step_grads = [(p, g, g._version) for p, g in grads]
        self._prev = (full, exact, self._step == 1)
        pending = _Pending(self._step, self._clock(), step_seconds, packed, full=full)
        pending.anomaly = anomaly
        self._ship(pending)

    def _full_stats(self) -> Packed:
        exact = self._engine.plan.exact_at(self._telemetry_steps)
        self._telemetry_steps += 1
        packed = self._compute(exact)
        self._last_paths = {lay.name: lay.path for lay in packed.layers}
        return packed

    def _sentinel_packed(self, total: torch.Tensor | None) -> Packed:
        pk = Packer(device=self._device)
        fields = {"grad_norm": pk.scalar(total if total is not None else 0.0)}
        lrs = [pk.scalar(g["lr"]) for g in self._optimizer.param_groups]
        return Packed(pk.pack(self._device), pk, [], lrs, fields)

    def _ship(self, pending: _Pending) -> None:
        """Start the step's packed statistics on their way to the host (CUDA: no sync)."""
        packed = pending.packed
        if self._cuda:
            host = torch.empty(packed.buffer.shape, dtype=torch.float64, pin_memory=True)
            host.copy_(packed.buffer, non_blocking=True)
            pending.host = host
            pending.event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            pending.event.record()
        else:
            pending.values = packed.buffer.tolist()
        if not self._pending or self._pending[-1] is not pending:
            self._pending.append(pending)

    def _loss_verdict(self, pending: _Pending, loss: float) -> None:
        """CPU, budget mode: a non-finite or spiking loss makes this very step full, when the
        gradients are still this step's; otherwise the next step is full."""
        anomaly = self._detector.loss(loss)
        if anomaly is None or pending.full:
            return
        unchanged = bool(self._step_grads) and all(
            p.grad is g and g._version == version for p, g, version in self._step_grads
        )
        if not unchanged:
            self._force_full = anomaly
            return
        exact = self._engine.plan.exact_at(self._telemetry_steps)
        pending.packed = self._full_stats()
        pending.values = pending.packed.buffer.tolist()
        pending.full, pending.anomaly = True, anomaly
        self._cadence.took_full(pending.step)
        if self._prev is not None:
            self._prev = (True, exact, self._prev[2])

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
        if self._cadence.budgeted and not (
            isinstance(value, torch.Tensor) and value.device.type != "cpu"
        ):
            start = time.perf_counter()
            self._loss_verdict(pending, float(value))
            self._hook_seconds += time.perf_counter() - start
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
        if not pending.full:
            return self._sentinel_record(pending, global_q["grad_norm"], loss, lrs)
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
            update_ratio=update_ratio(update_norm, param_norm),
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
            world_size=self._run_info.world_size,
        )

    def _sentinel_record(
        self, pending: _Pending, grad_norm: float, loss: float | None, lrs: list[float]
    ) -> StepRecord:
        """A sentinel-only record: loss, global gradient norm and finiteness; no layers.

        Norms the sentinel does not measure are NaN. On the CPU a non-finite value always made
        its step full, so a sentinel record is finite there. On CUDA the verdict is read here,
        one step late: it makes the next step full, and this record's `nonfinite["grad"]` is 1
        (at least one value; the exact counts are in that full record).
        """
        if self._cuda:
            anomaly = self._detector.grad(grad_norm)
            if loss is not None:
                anomaly = anomaly or self._detector.loss(loss)
            self._force_full = self._force_full or anomaly
        nan = math.nan
        return StepRecord(
            step=pending.step,
            time=pending.time,
            loss=loss,
            grad_norm=grad_norm,
            param_norm=nan,
            update_norm=nan,
            lr=lrs[0] if lrs else nan,
            step_seconds=pending.step_seconds,
            nonfinite={
                "grad": 0 if math.isfinite(grad_norm) else 1,
                "param": 0,
                "state": 0,
                "loss": 0 if loss is None or math.isfinite(loss) else 1,
            },
            layers={},
            lrs=tuple(lrs),
            update_ratio=nan,
            validation=pending.validation,
            dropped_total=self.dropped,
            rank=self._run_info.rank,
            world_size=self._run_info.world_size,
            full=False,
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
            every=self._every or 1,  # budget mode records every step
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
