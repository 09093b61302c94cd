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
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from rmswatch._limits import check_labels
from rmswatch._validation import ArgumentError
from rmswatch.trainer_hooks.adapters import adapter_for
from rmswatch.trainer_hooks.dispatch import Dispatcher, Sampler
from rmswatch.trainer_hooks.distributed import (
    DEFAULT_DESYNC_EVERY,
    DEFAULT_TIMEOUT_SECONDS,
    RankChecks,
    refuse_sharded_parameters,
)
from rmswatch.trainer_hooks.packing import Packed, Packer, Slot, decode
from rmswatch.trainer_hooks.plan import StatsPlan, choose_plan
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    RUN_STATUSES,
    CheckpointRecord,
    LayerInfo,
    LayerStats,
    RankCheckRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    Telemetry,
    ValidationRecord,
    update_ratio,
)
from rmswatch.trainer_hooks.screen import check_job, check_run, check_run_id, screen
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

# Path components wrappers insert into `named_parameters()`: torch.compile's OptimizedModule,
# FSDP (1) and activation checkpointing. DDP/DataParallel are unwrapped at the root (`module.`).
WRAPPER_COMPONENTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})

# clip_grad_norm_'s own epsilon: clip_coef = max_norm / (total_norm + 1e-6)
CLIP_EPS = 1e-6
# Without max_norm, a step counts as clipped when the post-clip norm is this much below the
# pre-clip one (a no-op clip multiplies by exactly 1.0; the two norms then differ by rounding).
CLIP_RTOL = 1e-5


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
    # clipping (record_grad_norm) and AMP (scaler): 0-d host values or pinned copies in flight
    preclip: float | torch.Tensor | None = None
    max_norm: float | None = None
    scale: float | torch.Tensor | None = None
    skipped: bool = False
    layer_preclip: list[float] | torch.Tensor | None = None  # grad_hooks: [total, per layer]
    lrs: tuple[float, ...] = ()  # skipped steps: the lrs at the skip (a scheduler moves them next)
    events: list[Any] = field(default_factory=list)

    def ready(self) -> bool:
        return (
            (self.event is None or bool(self.event.query()))
            and (self.loss_event is None or bool(self.loss_event.query()))
            and all(bool(e.query()) for e in self.events)
        )

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()
        if self.loss_event is not None:
            self.loss_event.synchronize()
        for event in self.events:
            event.synchronize()


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
    the CPU norm pass as a torch.compile'd kernel, compiled at the first telemetry step),
    `scaler` (a `torch.amp.GradScaler`: steps it skips are recorded with `skipped=True` at their
    own step number, and every record carries the loss scale), `start_step` (the number of
    optimizer steps already taken by the run this one resumes: the first step here is
    `start_step + 1`), `grad_hooks` (True: pre-clip gradient norms with no user line, from a
    post-accumulate-grad hook on each parameter that works only before telemetry steps; an
    explicit `record_grad_norm` wins; see docs/hooks.md "Your loop"). Under torch.distributed:
    `desync_every` (compare the ranks' optimizer state every this many steps; None turns it off)
    and `dist_timeout` (seconds, the telemetry gloo group's timeout); see docs/hooks.md.
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
        scaler: Any = None,
        start_step: int | None = None,
        grad_hooks: bool = False,
        desync_every: int | None = DEFAULT_DESYNC_EVERY,
        dist_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._adapter = adapter_for(optimizer)
        if start_step is not None:
            _check_int("start_step", start_step, 0)
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise ArgumentError(
                f"scaler={type(scaler).__name__}: expected a torch.amp.GradScaler "
                "(torch.amp.GradScaler('cuda') or ('cpu')) or None"
            )
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
        if desync_every is not None:
            _check_int("desync_every", desync_every, 1)
        self._stats_threads = stats_threads
        # what every store accepts, checked before anything starts (rmswatch._limits)
        check_job(job)
        if run_id is not None:
            check_run_id(run_id)
        labels = check_labels("labels", labels)
        self._optimizer = optimizer
        self._clock = clock
        self._every = every
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self._device = params[0].device if params else torch.device("cpu")
        self._cuda = self._device.type == "cuda"
        slots = _slots(optimizer, model)
        refuse_sharded_parameters([s.param for s in slots], [s.name for s in slots])
        plan = choose_plan(
            self._device,
            chunk_bytes=chunk_bytes,
            kernel=kernel,
            exact_every=exact_every,
            sample_size=sample_size,
        )
        self._engine = StatsEngine(self._adapter, optimizer, slots, plan, sample_seed=sample_seed)
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
        # weak references: holding the gradients would keep them alive into the next backward
        # (no memory reuse: a fresh allocation and page faults for every gradient, every step)
        self._step_grads: list[tuple[torch.Tensor, weakref.ref[torch.Tensor], int]] = []
        self._run_info = check_run(
            self._build_run_info(job, run_id, labels, rank, world_size, start_step)
        )
        self._rejected = 0
        self._records: deque[StepRecord] = deque(maxlen=keep_records)
        self._pending: deque[_Pending] = deque()
        self._step = start_step or 0
        self._hook_steps = 0  # post-step hooks seen: tells a skipped AMP step from a taken one
        self._preclip: tuple[float | torch.Tensor, float | None] | None = None
        self._loss_step: int | None = None
        self._warned_double_loss = False
        self._skipped_steps = 0
        self._scaler: torch.amp.GradScaler | None = scaler
        self._scaler_wrappers: dict[str, Callable[..., Any]] = {}
        self._unscaled_nonfinite: torch.Tensor | None = None  # per layer, right after unscale_
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
        if scaler is not None:
            self._wrap_scaler(scaler)
        self._hook_norms: dict[int, torch.Tensor] = {}
        if grad_hooks:
            for index, slot in enumerate(self._engine.slots):
                if slot.param.requires_grad:
                    self._handles.append(
                        slot.param.register_post_accumulate_grad_hook(  # type: ignore[no-untyped-call]
                            self._grad_hook(index)
                        )
                    )

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
    def rejected(self) -> int:
        """Records refused at a `record_*` call because a value is outside the store's limits
        (each also warned about, naming the field); see docs/store.md, "Limits"."""
        return self._rejected

    @property
    def sparse_grads(self) -> int:
        """Sparse gradients seen at step time (parameter-steps), see docs/hooks.md."""
        return self._sparse_grads

    @property
    def step(self) -> int:
        """The run's step counter: `start_step` plus the optimizer steps since `watch()`.

        A step the GradScaler skipped counts: it is a step of the loop, recorded as skipped.
        """
        return self._step

    @property
    def skipped_steps(self) -> int:
        """Steps the GradScaler skipped (inf/NaN gradients) since the monitor was attached."""
        return self._skipped_steps

    @property
    def next_step_is_telemetry(self) -> bool:
        """Whether the coming optimizer step is a telemetry step (for integrations that would
        otherwise compute something, e.g. a pre-clip norm, on every step)."""
        if self._every is None:  # budget mode: every step gets at least a sentinel record
            return True
        return self._step % self._every == 0

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
        start = time.perf_counter()
        # RMSprop raises on sparse gradients inside step(); count them before it does.
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    self._sparse_grads += 1
        self._complete(wait=False)
        self._hook_seconds += time.perf_counter() - start

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._hook_steps += 1
        self._step += 1
        if self._ranks is not None:
            self._rank_checked(self._ranks.after_step(self._step))
        now = time.perf_counter()
        step_seconds = None if self._last_step_end is None else now - self._last_step_end
        self._last_step_end = now
        preclip, self._preclip = self._preclip, None
        if not self._cadence.budgeted:
            if not self._cadence.due(self._step):
                return
            pending = _Pending(self._step, self._clock(), step_seconds, self._full_stats())
            self._attach_loop_facts(pending, preclip)
            self._cadence.took_full(self._step)
            self._ship(pending)
            return
        if step_seconds is not None and self._prev is not None:
            full, exact, first = self._prev
            cost = self._hook_seconds
            self._cadence.observe(step_seconds - cost, cost, full=full, exact=exact, first=first)
        self._hook_seconds = 0.0
        self._budgeted_step(step_seconds, preclip)
        self._hook_seconds += time.perf_counter() - now

    def _budgeted_step(
        self,
        step_seconds: float | None,
        preclip: tuple[float | torch.Tensor, float | None] | None,
    ) -> None:
        """Budget mode: the sentinel every step; full telemetry when due or anomalous."""
        total, grads = self._sentinel.grad_norm()
        anomaly = self._force_full
        self._force_full = None
        host_total: torch.Tensor | float | None = total
        if total is not None and not self._cuda:  # reading a CPU value costs nothing
            host_total = float(total)
            anomaly = self._detector.grad(host_total) or anomaly
        full = anomaly is not None or self._cadence.due(self._step)
        exact = False
        if full:
            exact = self._engine.plan.exact_at(self._telemetry_steps)
            packed = self._full_stats()
            self._cadence.took_full(self._step)
            self._step_grads = []
        else:
            packed = self._sentinel_packed(host_total)
            # A loss spike seen in record_loss can still make this step full, if the
            # gradients are still this step's (not cleared or overwritten since).
            self._step_grads = [(p, weakref.ref(g), g._version) for p, g in grads]
        # the first full step pays one-time warm-up: the cadence does not count it
        self._prev = (full, exact, full and self._cadence.full_steps == 1)
        pending = _Pending(self._step, self._clock(), step_seconds, packed, full=full)
        pending.anomaly = anomaly
        self._attach_loop_facts(pending, preclip)
        self._ship(pending)

    def _full_stats(self) -> Packed:
        exact = self._engine.plan.exact_at(self._telemetry_steps)
        self._telemetry_steps += 1
        packed = self._compute(exact)
        self._last_paths = {lay.name: lay.path for lay in packed.layers}
        return packed

    def _sentinel_packed(self, total: torch.Tensor | float | None) -> Packed:
        # CPU: the norm is already a host float, so the buffer stays empty (nothing to pack)
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
            (g := ref()) is not None and p.grad is g and g._version == version
            for p, ref, version in self._step_grads
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
        value = _scalar_argument("record_loss: loss", loss, "one element")
        if self._loss_step == self._step and not self._warned_double_loss:
            self._warned_double_loss = True
            warnings.warn(
                f"rmswatch: record_loss() called twice for step {self._step}; the last value is "
                "kept (call it once per optimizer step, after the step; warned once per run)",
                RuntimeWarning,
                stacklevel=2,
            )
        self._loss_step = self._step
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

    def record_grad_norm(
        self,
        total_norm: torch.Tensor | float,
        max_norm: float | None = None,
        *,
        step: int | None = None,
    ) -> None:
        """The total gradient norm before clipping, for the optimizer step that comes next.

        Pass the tensor `torch.nn.utils.clip_grad_norm_` returned (no host sync: it is read
        with the step's statistics). The record then carries `grad_norm_before_clip`, `clipped`
        and, per layer, `grad_norm_before_clip` (the layer's norm divided by the clip
        coefficient, which clip_grad_norm_ applies to every gradient alike; this assumes it was
        given all of the optimizer's parameters). With `max_norm` (the value given to
        clip_grad_norm_), `clipped` uses torch's own rule `max_norm / (total + 1e-6) < 1`;
        without it, a step is clipped when the post-clip norm is below the pre-clip one.
        Called twice before one step, the last call counts. `step=monitor.step` attaches it
        to the step that has just run instead (for trainers that report the norm only after the
        step, e.g. Hugging Face's logs); it is ignored when that step was not a telemetry step.
        """
        if self._warn_closed("record_grad_norm"):
            return
        value = _scalar_argument(
            "record_grad_norm: total_norm", total_norm, "what clip_grad_norm_ returns"
        )
        if max_norm is not None and (
            isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0
        ):
            raise ArgumentError(f"record_grad_norm: max_norm={max_norm!r}: expected a number > 0")
        facts = (value, None if max_norm is None else float(max_norm))
        if step is None:
            self._preclip = facts
            return
        _check_int("step", step, 0)
        pending = self._pending[-1] if self._pending else None
        if step == self._step and pending is not None and pending.step == step:
            pending.preclip = self._defer(pending, facts[0])
            pending.max_norm = facts[1]

    def record_validation(
        self, value: torch.Tensor | float, step: int | None = None, name: str = "val_loss"
    ) -> None:
        """A validation metric at `step` (default: the current step); goes to every sink."""
        if self._warn_closed("record_validation"):
            return
        number = float(value.detach().reshape(())) if isinstance(value, torch.Tensor) else value
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            raise ArgumentError(f"record_validation: value must be a number, got {value!r}")
        at = self._step if step is None else _check_int("step", step, 0)
        record = self._screened(
            "record_validation", ValidationRecord(at, self._clock(), float(number), name)
        )
        if record is None:
            return
        if name == "val_loss":
            # the step's own `validation` is val_loss only: the loss alerts read it
            for pending in self._pending:
                if pending.step == at:
                    pending.validation = float(number)
        self._offer(record)

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
            raise ArgumentError(f"record_checkpoint: action={action!r}; expected 'save' or 'load'")
        at = self._step if step is None else _check_int("step", step, 0)
        record = self._screened(
            "record_checkpoint",
            CheckpointRecord(
                at, self._clock(), action, ok, seconds, size_bytes, os.fspath(path), detail
            ),
        )
        if record is not None:
            self._offer(record)

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
            raise ArgumentError(
                f"close: status={status!r}; expected one of {', '.join(RUN_STATUSES)}"
            )
        if self._warn_closed("close"):
            return
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._unwrap_scaler()
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

    def _screened(self, what: str, item: Telemetry) -> Telemetry | None:
        """`item` as the store will take it, or None (counted, warned) when it can't."""
        kept, problems = screen(item)
        if problems:
            self._rejected += 1
            warnings.warn(
                f"rmswatch {what}() at step {getattr(item, 'step', '?')}: {problems[0]}; "
                "this record is not stored (rejected), the run goes on",
                RuntimeWarning,
                stacklevel=4,
            )
        return kept

    def _rank_checked(self, records: list[RankCheckRecord]) -> None:
        for record in records:
            self._rank_checks.append(record)
            if self._run_info.rank == 0:  # every rank sees the same gather; one reports it
                self._offer(record)

    def _offer(self, item: Telemetry) -> None:
        if self._dispatcher is not None:
            self._dispatcher.offer(item)

    # -- clipping and AMP ----------------------------------------------------------------------

    def _defer(self, pending: _Pending, value: float | torch.Tensor) -> float | torch.Tensor:
        """A 0-d value to read when the record completes; CUDA: a pinned non-blocking copy."""
        if isinstance(value, torch.Tensor) and value.device.type == "cuda":
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            host.copy_(value, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
            pending.events.append(event)
            return host
        return value

    def _grad_hook(self, index: int) -> Callable[[torch.Tensor], None]:
        """After backward accumulated into `.grad`: its norm, before telemetry steps only.

        With accumulation the last micro-batch's call sees the whole gradient and wins.
        """

        def hook(param: torch.Tensor) -> None:
            grad = param.grad
            if not self.next_step_is_telemetry or grad is None or grad.is_sparse:
                return
            dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
            self._hook_norms[index] = torch.linalg.vector_norm(grad, dtype=dtype)

        return hook

    def _hooked_preclip(self) -> torch.Tensor | None:
        """[total, layer 0, layer 1, ...] pre-clip norms from the grad hooks (on the device),
        unscaled by the GradScaler's scale when one is attached; NaN for a layer without one."""
        norms, self._hook_norms = self._hook_norms, {}
        if not norms:
            return None
        device = next(iter(norms.values())).device
        missing = torch.tensor(math.nan, dtype=torch.float64, device=device)
        layers = torch.stack(
            [
                norms[i].to(torch.float64) if i in norms else missing
                for i in range(len(self._engine.slots))
            ]
        )
        scaler = self._scaler
        scale = getattr(scaler, "_scale", None) if scaler is not None else None
        if scaler is not None and scaler.is_enabled() and isinstance(scale, torch.Tensor):
            layers = layers / scale.to(device=device, dtype=torch.float64)
        total = torch.linalg.vector_norm(layers.nan_to_num(nan=0.0, posinf=math.inf))
        return torch.cat([total.reshape(1), layers])

    def _attach_loop_facts(
        self, pending: _Pending, preclip: tuple[float | torch.Tensor, float | None] | None
    ) -> None:
        hooked = self._hooked_preclip()
        if preclip is not None:
            pending.preclip = self._defer(pending, preclip[0])
            pending.max_norm = preclip[1]
        elif hooked is not None:
            deferred = self._defer(pending, hooked)
            assert isinstance(deferred, torch.Tensor)
            pending.layer_preclip = deferred
        scaler = self._scaler
        if scaler is not None and scaler.is_enabled():
            # the scale the step's backward used: update() changes it in place only afterwards
            # (on CUDA the copy is queued before update()'s kernel; on the CPU it is read now)
            scale = getattr(scaler, "_scale", None)
            if isinstance(scale, torch.Tensor) and scale.device.type == "cuda":
                pending.scale = self._defer(pending, scale)
            else:
                pending.scale = float(scaler.get_scale())

    def _wrap_scaler(self, scaler: torch.amp.GradScaler) -> None:
        """Route `scaler.step` through the monitor, to see the steps it skips.

        A skipped step never calls `optimizer.step()`, so no optimizer hook fires; the wrapper
        notices that (no post-step hook ran) and records the step as skipped.
        """
        original_step = scaler.step
        original_unscale = scaler.unscale_

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            seen = self._hook_steps
            result = original_step(optimizer, *args, **kwargs)
            if (
                optimizer is self._optimizer
                and self._hook_steps == seen
                and not self._closed
                and scaler.is_enabled()
            ):
                self._on_skipped()
            self._unscaled_nonfinite = None
            return result

        def unscale_(optimizer: Any) -> None:
            original_unscale(optimizer)
            if optimizer is self._optimizer and not self._closed:
                self._count_after_unscale(scaler, optimizer)

        self._scaler_wrappers = {"step": step, "unscale_": unscale_}
        scaler.step = step  # type: ignore[method-assign]
        scaler.unscale_ = unscale_  # type: ignore[method-assign]

    def _count_after_unscale(self, scaler: torch.amp.GradScaler, optimizer: Any) -> None:
        """The per-layer inf/NaN counts of the unscaled gradients, before any clipping.

        Clipping a non-finite total norm multiplies every gradient by NaN, so counting at the
        skip itself would blame every layer. On the CPU the scaler's found-inf flag is read for
        free and the counts are taken only when it is set; on CUDA they are always taken on the
        device (one isfinite pass over the gradients, no host read).
        """
        states = getattr(scaler, "_per_optimizer_states", {})
        found = states.get(id(optimizer), {}).get("found_inf_per_device", {})
        if not self._cuda and not any(float(v) for v in found.values()):
            self._unscaled_nonfinite = None
            return
        params = [slot.param for slot in self._engine.slots]
        counts = [
            torch.zeros((), dtype=torch.int64, device=p.device)
            if p.grad is None or p.grad.is_sparse
            else (~torch.isfinite(p.grad)).sum()
            for p in params
        ]
        self._unscaled_nonfinite = torch.stack(counts) if counts else None

    def _unwrap_scaler(self) -> None:
        scaler = self._scaler
        if scaler is not None:
            for name, wrapper in self._scaler_wrappers.items():
                if scaler.__dict__.get(name) is wrapper:
                    delattr(scaler, name)  # the class's own method again
            self._scaler_wrappers = {}

    def _on_skipped(self) -> None:
        """A step the GradScaler skipped: record it at its own step number, always.

        The optimizer never ran, so there is no update and no state change. The gradients are
        unscaled in place by then (scaler.unscale_), so the inf/NaN counts are those of the
        unscaled gradients, exact, per layer.
        """
        self._complete(wait=False)
        self._step += 1
        self._skipped_steps += 1
        now = time.perf_counter()
        step_seconds = None if self._last_step_end is None else now - self._last_step_end
        self._last_step_end = now
        preclip, self._preclip = self._preclip, None
        buffer = _skipped_values([s.param for s in self._engine.slots], self._unscaled_nonfinite)
        self._unscaled_nonfinite = None
        pending = _Pending(self._step, self._clock(), step_seconds, packed=None, skipped=True)  # type: ignore[arg-type]
        # the scaler has just read found_inf on the host, so a tensor lr costs no extra stall
        pending.lrs = tuple(float(_plain(g["lr"])) for g in self._optimizer.param_groups)
        if self._cuda:
            host = torch.empty(buffer.shape, dtype=torch.float64, pin_memory=True)
            host.copy_(buffer, non_blocking=True)
            pending.host = host
            pending.event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            pending.event.record()
        else:
            pending.values = buffer.tolist()
        self._attach_loop_facts(pending, preclip)
        self._pending.append(pending)

    def _clip_facts(
        self, pending: _Pending, post: float
    ) -> tuple[float | None, bool, float | None]:
        """(pre-clip norm, clipped, clip coefficient) of one record."""
        if pending.preclip is None and pending.layer_preclip is not None:
            hooked = _floats(pending.layer_preclip)
            pending.layer_preclip = hooked
            pending.preclip = hooked[0]
        if pending.preclip is None:
            return None, False, None
        pre = float(pending.preclip)
        if not math.isfinite(pre):
            # torch multiplies by max_norm / inf = 0 (or NaN): changed, layer norms unknowable
            return pre, True, None
        if pending.max_norm is not None:
            coef = min(1.0, pending.max_norm / (pre + CLIP_EPS))
            return pre, coef < 1.0, coef
        if pre > 0 and post < pre * (1 - CLIP_RTOL):
            return pre, True, post / pre
        return pre, False, 1.0

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
        if pending.skipped:
            return self._build_skipped(pending, values)
        layers, global_q, lrs = decode(pending.packed, values, RMS_EDGES)
        loss: float | None = None
        if pending.loss is not None:
            loss = float(pending.loss)
        if not pending.full:
            return self._sentinel_record(pending, global_q["grad_norm"], loss, lrs)
        pre, clipped, coef = self._clip_facts(
            pending, math.sqrt(sum(s.grad_norm**2 for s in layers.values()))
        )
        if pre is not None:
            layers = {
                name: replace(
                    stats,
                    grad_norm_before_clip=(
                        stats.grad_norm / coef if coef is not None and coef > 0 else None
                    ),
                )
                for name, stats in layers.items()
            }
        if isinstance(pending.layer_preclip, list):  # measured per layer by the grad hooks
            measured = pending.layer_preclip[1:]
            layers = {
                name: replace(stats, grad_norm_before_clip=None if math.isnan(norm) else norm)
                for (name, stats), norm in zip(layers.items(), measured, strict=True)
            }
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
            grad_norm_before_clip=pre,
            clipped=clipped,
            loss_scale=None if pending.scale is None else float(pending.scale),
        )

    def _build_skipped(self, pending: _Pending, values: list[float]) -> StepRecord:
        layers: dict[str, LayerStats] = {}
        for i, slot in enumerate(self._engine.slots):
            grad_norm, nf_grad, param_norm, nf_param, has_grad = values[5 * i : 5 * i + 5]
            layers[slot.name] = LayerStats(
                grad_norm=grad_norm,
                param_norm=param_norm,
                update_norm=0.0,
                update_ratio=0.0,
                nonfinite_grad=int(nf_grad),
                nonfinite_param=int(nf_param),
                nonfinite_state=0,
                eff_lr_mean=None,
                eff_lr_min=None,
                eff_lr_p50=None,
                eff_lr_p95=None,
                eff_lr_max=None,
                rms_hist=None,
                group=slot.group,
                numel=slot.numel,
                has_grad=bool(has_grad),
                sparse_grad=slot.param.grad is not None and slot.param.grad.is_sparse,
            )
        loss = None if pending.loss is None else float(pending.loss)
        grad_norm = math.sqrt(sum(s.grad_norm**2 for s in layers.values()))
        pre, clipped, coef = self._clip_facts(pending, grad_norm)
        if pre is not None and coef is not None and coef > 0:
            layers = {
                n: replace(s, grad_norm_before_clip=s.grad_norm / coef) for n, s in layers.items()
            }
        lrs = list(pending.lrs)
        return StepRecord(
            step=pending.step,
            time=pending.time,
            loss=loss,
            grad_norm=grad_norm,
            param_norm=math.sqrt(sum(s.param_norm**2 for s in layers.values())),
            update_norm=0.0,
            lr=lrs[0] if lrs else math.nan,
            step_seconds=pending.step_seconds,
            nonfinite={
                "grad": sum(s.nonfinite_grad for s in layers.values()),
                "param": sum(s.nonfinite_param for s in layers.values()),
                "state": 0,
                "loss": 0 if loss is None or math.isfinite(loss) else 1,
            },
            layers=layers,
            lrs=tuple(lrs),
            validation=pending.validation,
            dropped_total=self.dropped,
            rank=self._run_info.rank,
            world_size=self._run_info.world_size,
            grad_norm_before_clip=pre,
            clipped=clipped,
            skipped=True,
            loss_scale=None if pending.scale is None else float(pending.scale),
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
        pre, clipped, _ = self._clip_facts(pending, grad_norm)
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
            grad_norm_before_clip=pre,
            clipped=clipped,
            loss_scale=None if pending.scale is None else float(pending.scale),
            full=False,
        )

    def _build_run_info(
        self,
        job: str,
        run_id: str | None,
        labels: Mapping[str, str] | None,
        rank: int | None,
        world_size: int | None,
        start_step: int | None = None,
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
            resumed_from_step=start_step,
        )


def _floats(value: list[float] | torch.Tensor) -> list[float]:
    return value if isinstance(value, list) else [float(v) for v in value.tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu()) if value.numel() == 1 else value.tolist()
    return value


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ArgumentError(f"{name}={value!r}: expected an integer >= {low}")
    return value


def _skipped_values(
    params: Sequence[torch.Tensor], nonfinite_grads: torch.Tensor | None = None
) -> torch.Tensor:
    """Per parameter [grad norm, non-finite grads, param norm, non-finite params, has grad],
    on the device, as one float64 vector (a skipped AMP step's whole measurement).
    `nonfinite_grads` (per parameter, counted right after unscale_) replaces the count of the
    gradients as they are now."""
    parts: list[torch.Tensor] = []
    for i, p in enumerate(params):
        x = p.detach()
        grad = p.grad
        if grad is not None and grad.is_sparse:
            grad = grad.coalesce()._values()
        norm_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        zero = torch.zeros((), dtype=torch.float64, device=x.device)
        g_norm = zero if grad is None else torch.linalg.vector_norm(grad, dtype=norm_dtype)
        g_bad = zero if grad is None else (~torch.isfinite(grad)).sum()
        if nonfinite_grads is not None:
            g_bad = nonfinite_grads[i]
        parts += [
            g_norm.to(torch.float64),
            g_bad.to(torch.float64),
            torch.linalg.vector_norm(x, dtype=norm_dtype).to(torch.float64),
            (~torch.isfinite(x)).sum().to(torch.float64),
            zero + (0.0 if grad is None else 1.0),
        ]
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack(parts)


def user_parameter_names(model: torch.nn.Module) -> dict[int, str]:
    """id(parameter) -> the name the user gave it, through torch.compile, DDP/DataParallel,
    FSDP and activation-checkpoint wrappers (`0.weight`, not `_orig_mod.0.weight`,
    `module.0.weight` or `_fsdp_wrapped_module.0.weight`)."""
    root = model
    while True:
        if isinstance(root, torch._dynamo.eval_frame.OptimizedModule):
            root = root._orig_mod
        elif isinstance(
            root, (torch.nn.parallel.DistributedDataParallel, torch.nn.parallel.DataParallel)
        ):
            root = root.module
        else:
            break
    return {
        id(p): ".".join(part for part in name.split(".") if part not in WRAPPER_COMPONENTS)
        for name, p in root.named_parameters()
    }


def _slots(optimizer: torch.optim.Optimizer, model: torch.nn.Module | None) -> list[Slot]:
    names: dict[int, str] = {}
    if model is not None:
        names = user_parameter_names(model)
    slots: list[Slot] = []
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            name = names.get(id(p), f"group{gi}.param{pi}")
            slots.append(Slot(name, p, gi, p.numel()))
    return slots


def _scalar_argument(where: str, value: object, scalar_hint: str) -> float | torch.Tensor:
    """A loss or norm argument as a detached 0-d tensor (no host sync) or a float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ArgumentError(
                f"{where} must be a scalar ({scalar_hint}), got shape {tuple(value.shape)}"
            )
        return value.detach().reshape(())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ArgumentError(
        f"{where} must be a float or a one-element tensor, got {type(value).__name__}"
    )
