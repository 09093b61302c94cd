"""The labelled incident corpus: real RMSProp trainings on the CPU, each a few seconds long.

Every case is a real training under `rmswatch.watch` whose telemetry is recorded by an
in-memory sink, on a simulated clock (one training iteration = `PERIOD` seconds), so the
benchmark can replay it into a store and tick the real evaluator at any speed.

Failures are robust by construction, not by accident of a CPU's rounding (torch's float sqrt
is not IEEE-rounded on every x86 machine): NaN comes from a NaN in the data (IEEE: NaN in,
NaN out); the finite divergence raises the lr x1.2 per step to a cap, and RMSProp's update is
bounded by lr / sqrt(1 - alpha) per step, so the loss climbs many decades and provably stays
finite; the gradient collapse feeds all-zero features into a bias-free ReLU network, so every
gradient is exactly 0; the fp16 case casts a 1e6 feature to float16 (max 65504), which is inf
on every machine. Each case is labelled with its failure mode (the seed's F1-F6) and the step
its cause begins (`onset_step`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import rmswatch
from rmswatch.trainer_hooks.records import (
    RunInfo,
    RunStatus,
    StepRecord,
    Telemetry,
)

PERIOD = 1.0  # simulated seconds per training iteration
GAP = 120.0  # simulated seconds between one run's end and the next run's start
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class SimClock:
    """The training's clock: advanced by the loop, read by the monitor."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, iterations: int = 1) -> None:
        self.t += iterations * PERIOD


class Recorder:
    """A `Sink` that keeps everything in memory. `offset` is the step a resumed run starts
    from (passed to watch() as start_step)."""

    def __init__(self) -> None:
        self.offset = 0
        self.run: RunInfo | None = None
        self.items: list[Telemetry] = []
        self.status: RunStatus | None = None

    def open(self, run: RunInfo) -> None:
        self.run = run

    def write(self, items: Sequence[Telemetry]) -> None:
        self.items.extend(items)

    def flush(self) -> None:
        pass

    def close(self, status: RunStatus) -> None:
        self.status = status


@dataclass
class Recording:
    case: Case
    run: RunInfo
    items: list[Telemetry]
    status: RunStatus

    @property
    def steps(self) -> list[StepRecord]:
        return [i for i in self.items if isinstance(i, StepRecord)]

    @property
    def start(self) -> float:
        return self.run.started_at

    @property
    def end(self) -> float:
        return self.status.time


@dataclass
class Context:
    """What a case's training function gets: the clock, and `watch` wired to the recorder."""

    case: Case
    clock: SimClock
    recorder: Recorder
    checkpoints: dict[str, dict[str, Any]]

    def watch(self, opt: torch.optim.Optimizer, model: nn.Module, **extra: Any) -> rmswatch.Monitor:
        return rmswatch.watch(
            opt, model=model, job=self.case.job, run_id=self.case.name, sinks=[self.recorder],
            system_metrics=False, clock=self.clock, labels={"model": self.case.job},
            start_step=self.recorder.offset or None, **extra,
        )  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str  # the run id
    job: str
    train: Callable[[Context], tuple[str, str]]  # -> (status, detail)
    failure_mode: str | None = None  # None: a healthy run
    onset_step: int | None = None
    # alerts that count as detecting this incident (any of them firing at or after onset)
    detected_by: tuple[str, ...] = ()
    note: str = ""

    @property
    def healthy(self) -> bool:
        return self.failure_mode is None


# ----------------------------------------------------------------------------- tasks


def classification(seed: int, n: int = 16384, dim: int = 32, classes: int = 10) -> Any:
    """A teacher network labels Gaussian inputs: learnable, deterministic, no downloads. Large
    enough that a healthy run sees each sample about twice and does not overfit (with 4096
    samples the runs overfit: validation loss 6-10% above its best by the end)."""
    gen = torch.Generator().manual_seed(1234 + seed)
    teacher = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, classes))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.8)
        x = torch.randn(n + 1024, dim, generator=gen)
        y = teacher(x).argmax(dim=1)
    return x[:n], y[:n], x[n:], y[n:]


def regression(seed: int, n: int = 4096, dim: int = 16) -> Any:
    gen = torch.Generator().manual_seed(4321 + seed)
    w = torch.randn(dim, 1, generator=gen)
    x = torch.randn(n + 1024, dim, generator=gen)
    y = torch.tanh(x @ w) * 2.0 + 0.05 * torch.randn(n + 1024, 1, generator=gen)
    return x[:n], y[:n], x[n:], y[n:]


def images(seed: int, n: int = 2048, classes: int = 4) -> Any:
    """1x8x8 images: a class template plus noise."""
    gen = torch.Generator().manual_seed(99 + seed)
    templates = torch.randn(classes, 1, 8, 8, generator=gen)
    y = torch.randint(0, classes, (n + 512,), generator=gen)
    x = templates[y] + 0.8 * torch.randn(n + 512, 1, 8, 8, generator=gen)
    return x[:n], y[:n], x[n:], y[n:]


def tokens(seed: int, n: int = 2048, length: int = 8, vocab: int = 16) -> Any:
    """Sequences labelled by (first token + last token) mod 4: needs attention across positions."""
    gen = torch.Generator().manual_seed(7 + seed)
    x = torch.randint(0, vocab, (n + 512, length), generator=gen)
    y = (x[:, 0] + x[:, -1]) % 4
    return x[:n], y[:n], x[n:], y[n:]


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> Iterator[Any]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - size + 1, size):
            idx = order[start : start + size]
            yield x[idx], y[idx]


def mlp(seed: int, dim: int = 32, out: int = 10, hidden: int = 64, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, hidden, bias=bias),
        nn.ReLU(), nn.Linear(hidden, out, bias=bias),
    )  # fmt: skip


class TinyCnn(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class TinyTransformer(nn.Module):
    def __init__(self, seed: int, vocab: int = 16, d: int = 32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, d)
        self.position = nn.Parameter(torch.randn(8, d) * 0.1)
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x) + self.position).mean(dim=1))


# ----------------------------------------------------------------------------- the loop


@dataclass
class Fit:
    """One training loop with the knobs the cases turn; hooks mutate a batch or the optimizer."""

    steps: int = 400
    batch: int = 64
    validate_every: int = 25
    seed: int = 0
    accumulate: int = 1
    clip: float | None = None
    autocast: torch.dtype | None = None
    scaler: bool = False
    # abort after this many non-finite losses in a row (the job's own guard); None: never
    abort_after_nonfinite: int | None = 20
    # stop early once the validation loss reaches this (an early-stopping retrain)
    stop_at_val: float | None = None
    # or: stop at the median final validation loss of these earlier runs of the job
    stop_at_val_of: tuple[str, ...] = ()
    schedule: Callable[[torch.optim.Optimizer], Any] | None = None
    plateau: bool = False
    on_batch: Callable[[int, Any], Any] | None = None  # (iteration, (x, y)) -> (x, y)
    on_step: Callable[[int, torch.optim.Optimizer], None] | None = None
    stall_at: int | None = None  # the loop hangs here for `stall_iterations`, then is killed
    stall_iterations: int = 900
    extra: dict[str, Any] = field(default_factory=dict)


def fit(
    ctx: Context,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: Any,
    loss_fn: nn.Module,
    plan: Fit,
    *,
    save_as: str | None = None,
) -> tuple[str, str]:
    torch.set_num_threads(1)
    x, y, x_val, y_val = data
    scaler = torch.amp.GradScaler("cpu") if plan.scaler else None
    monitor = ctx.watch(opt, model, scaler=scaler)
    scheduler = plan.schedule(opt) if plan.schedule else None
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2) if (
        plan.plateau) else None  # fmt: skip
    stream = batches(x, y, plan.batch, plan.seed)
    stop_at = plan.stop_at_val
    if plan.stop_at_val_of:
        finals = ctx.checkpoints.get(f"final_val:{ctx.case.job}", {})
        stop_at = float(torch.tensor([finals[n] for n in plan.stop_at_val_of]).median())
    status, detail, nonfinite_run, step, val = "succeeded", "", 0, 0, math.nan
    for i in range(plan.steps):
        ctx.clock.advance()
        if plan.stall_at is not None and i == plan.stall_at:
            ctx.clock.advance(plan.stall_iterations)  # alive, but no step ever comes
            status, detail = "failed", f"stalled at iteration {i}; killed by the operator"
            break
        if plan.on_step:
            plan.on_step(i, opt)
        opt.zero_grad(set_to_none=True)
        loss_value = 0.0
        for _ in range(plan.accumulate):
            xb, yb = next(stream)
            if plan.on_batch:
                xb, yb = plan.on_batch(i, (xb, yb))
            with torch.autocast("cpu", dtype=plan.autocast or torch.bfloat16,
                                enabled=plan.autocast is not None):  # fmt: skip
                loss = loss_fn(model(xb).float(), yb) / plan.accumulate
            (scaler.scale(loss) if scaler else loss).backward()
            loss_value += float(loss.detach())
        if plan.clip is not None:
            if scaler:
                scaler.unscale_(opt)
            monitor.record_grad_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), plan.clip))
        if scaler:
            scaler.step(opt)  # skipped (no optimizer step at all) when the grads hold inf/NaN
            scaler.update()
        else:
            opt.step()
        monitor.record_loss(loss_value)
        if scheduler is not None:
            scheduler.step()
        step = i + 1
        if step % plan.validate_every == 0:
            with torch.no_grad():
                val = float(loss_fn(model(x_val).float(), y_val))
            monitor.record_validation(val)
            if plateau is not None:
                plateau.step(val)
            if stop_at is not None and val <= stop_at:
                detail = f"reached validation loss {val:.4g} at step {step}"
                break
        nonfinite_run = 0 if math.isfinite(loss_value) else nonfinite_run + 1
        if plan.abort_after_nonfinite is not None and nonfinite_run >= plan.abort_after_nonfinite:
            status, detail = "failed", f"loss non-finite for {nonfinite_run} steps; aborted"
            break
    if save_as is not None:
        ctx.checkpoints[save_as] = {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(opt.state_dict()),
            "step": ctx.recorder.offset + step,
        }
    if plan.validate_every <= step:
        ctx.checkpoints.setdefault(f"final_val:{ctx.case.job}", {})[ctx.case.name] = val
    ctx.clock.advance()
    monitor.close(status=status, detail=detail)
    return status, detail


# ----------------------------------------------------------------------------- the cases

CE = nn.CrossEntropyLoss
MSE = nn.MSELoss


def _rmsprop(model: nn.Module, lr: float = 2e-3, **kwargs: Any) -> torch.optim.RMSprop:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.RMSprop(params, lr=lr, foreach=True, **kwargs)


def _cls(seed: int, lr: float = 2e-3, **plan: Any) -> Callable[[Context], tuple[str, str]]:
    def train(ctx: Context) -> tuple[str, str]:
        model = mlp(seed)
        return fit(ctx, model, _rmsprop(model, lr), classification(0), CE(), Fit(seed=seed, **plan))

    return train


def warmup_cosine(warmup: int, total: int) -> Callable[[torch.optim.Optimizer], Any]:
    def make(opt: torch.optim.Optimizer) -> Any:
        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    return make


def cnn_steplr(ctx: Context) -> tuple[str, str]:
    model = TinyCnn(1)
    opt = _rmsprop(model, 1e-3)
    plan = Fit(seed=1, schedule=lambda o: torch.optim.lr_scheduler.StepLR(o, 150, gamma=0.3))
    return fit(ctx, model, opt, images(0), CE(), plan)


def transformer_warmup_cosine(ctx: Context) -> tuple[str, str]:
    model = TinyTransformer(2)
    opt = _rmsprop(model, 1e-3)
    return fit(ctx, model, opt, tokens(0), CE(), Fit(seed=2, schedule=warmup_cosine(60, 400)))


def onecycle(ctx: Context) -> tuple[str, str]:
    model = mlp(3)
    opt = _rmsprop(model, 3e-3)
    plan = Fit(
        seed=3, schedule=lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 3e-3, total_steps=400)
    )
    return fit(ctx, model, opt, classification(0), CE(), plan)


def plateau(ctx: Context) -> tuple[str, str]:
    model = mlp(4)
    return fit(
        ctx, model, _rmsprop(model, 3e-3), classification(0), CE(), Fit(seed=4, plateau=True)
    )


def clipping(ctx: Context) -> tuple[str, str]:
    model = mlp(5)
    return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), Fit(seed=5, clip=1.0))


def bf16(ctx: Context) -> tuple[str, str]:
    model = mlp(6)
    plan = Fit(seed=6, autocast=torch.bfloat16)
    return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), plan)


def fp16_scaler(onset: int | None) -> Callable[[Context], tuple[str, str]]:
    """fp16 autocast on the CPU under a real torch.amp.GradScaler('cpu'). With `onset`, a
    feature arrives unnormalised (x 1e6) from that step: its float16 cast is inf (max 65504)
    on every machine, every step's grads hold inf/NaN, the scaler skips every step and halves
    its scale each time; the monitor records each skipped step (watch(scaler=...)). The job
    has no guard and runs to its step budget."""

    def on_batch(i: int, batch: Any) -> Any:
        xb, yb = batch
        if onset is not None and i >= onset:
            xb = xb.clone()
            xb[:, 0] = 1e6
        return xb, yb

    def train(ctx: Context) -> tuple[str, str]:
        model = mlp(7)
        plan = Fit(seed=7, steps=1300 if onset is not None else 400, autocast=torch.float16,
                   scaler=True, on_batch=on_batch, abort_after_nonfinite=None)  # fmt: skip
        return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), plan)

    return train


def accumulation(ctx: Context) -> tuple[str, str]:
    model = mlp(8)
    plan = Fit(seed=8, batch=16, accumulate=4)
    return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), plan)


def momentum(ctx: Context) -> tuple[str, str]:
    model = mlp(9)
    return fit(
        ctx, model, _rmsprop(model, 5e-4, momentum=0.9), classification(0), CE(), Fit(seed=9)
    )


def centered(ctx: Context) -> tuple[str, str]:
    model = mlp(10)
    opt = _rmsprop(model, 1e-3, centered=True)
    return fit(ctx, model, opt, classification(0), CE(), Fit(seed=10))


def frozen(ctx: Context) -> tuple[str, str]:
    model = mlp(11)
    for p in model[0].parameters():  # a frozen pretrained first layer
        p.requires_grad_(False)
    return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), Fit(seed=11))


def regress(lr_raise_at: int | None = None, zero_features_at: int | None = None) -> Any:
    """A plain regression MLP (bias-free, ReLU). `lr_raise_at`: someone raises the lr x1.2 per
    step (capped at 1e3) from that step. `zero_features_at`: the feature pipeline breaks and
    yields all-zero rows: output 0, every gradient exactly 0, loss stuck at the label power."""

    def on_step(i: int, opt: torch.optim.Optimizer) -> None:
        if lr_raise_at is not None and i >= lr_raise_at:
            for group in opt.param_groups:
                group["lr"] = min(group["lr"] * 1.2, 1e3)

    def on_batch(i: int, batch: Any) -> Any:
        xb, yb = batch
        if zero_features_at is not None and i >= zero_features_at:
            xb = torch.zeros_like(xb)
        return xb, yb

    def train(ctx: Context) -> tuple[str, str]:
        model = mlp(12, dim=16, out=1, bias=False)
        steps = 400 if lr_raise_at is None and zero_features_at is None else 600
        plan = Fit(seed=12, steps=steps, on_step=on_step, on_batch=on_batch)
        return fit(ctx, model, _rmsprop(model, 2e-3), regression(0), MSE(), plan)

    return train


def with_nan_batch(at: int, abort_after: int) -> Callable[[Context], tuple[str, str]]:
    """A corrupt record (NaN features) in the batch at `at`: NaN in, NaN out, on every CPU; the
    NaN reaches the weights and every later loss. The job's guard aborts after `abort_after`."""

    def on_batch(i: int, batch: Any) -> Any:
        xb, yb = batch
        if i == at:
            xb = xb.clone()
            xb[0] = math.nan
        return xb, yb

    return _cls(13, steps=600, on_batch=on_batch, abort_after_nonfinite=abort_after)


def oscillating(onset: int) -> Callable[[Context], tuple[str, str]]:
    """From `onset` the data loader yields batches of 2 and the lr is tripled: noisy,
    oscillating updates that never diverge."""

    def train(ctx: Context) -> tuple[str, str]:
        model = mlp(14)
        opt = _rmsprop(model, 2e-3)
        small = batches(*classification(0)[:2], 2, 14)

        def on_batch(i: int, batch: Any) -> Any:
            return next(small) if i >= onset else batch

        def on_step(i: int, o: torch.optim.Optimizer) -> None:
            if i == onset:
                for group in o.param_groups:
                    group["lr"] *= 3

        plan = Fit(seed=14, steps=onset + 500, on_batch=on_batch, on_step=on_step)
        return fit(ctx, model, opt, classification(0), CE(), plan)

    return train


def resumed(source: str, *, full_state: bool, save_as: str | None = None) -> Any:
    """Resume from `source`'s checkpoint; without `full_state` only the model weights were
    saved, so square_avg restarts at zero and every effective lr jumps."""

    def train(ctx: Context) -> tuple[str, str]:
        checkpoint = ctx.checkpoints[source]
        model = mlp(15)
        model.load_state_dict(checkpoint["model"])
        opt = _rmsprop(model, 2e-3)
        if full_state:
            opt.load_state_dict(checkpoint["optimizer"])
        ctx.recorder.offset = int(checkpoint["step"])
        return fit(ctx, model, opt, classification(0), CE(), Fit(seed=15, steps=300),
                   save_as=save_as)  # fmt: skip

    return train


def embed_base(ctx: Context) -> tuple[str, str]:
    model = mlp(15)
    return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), Fit(seed=15, steps=300),
               save_as="embed-001")  # fmt: skip


RANKER_STEPS = 400


def ranker(seed: int, lr: float, steps: int = RANKER_STEPS, stop_at: tuple[str, ...] = ()) -> Any:
    return _cls(seed, lr, steps=steps, stop_at_val_of=stop_at)


def stall(ctx: Context) -> tuple[str, str]:
    model = mlp(16)
    plan = Fit(seed=16, stall_at=250)
    return fit(ctx, model, _rmsprop(model, 2e-3), classification(0), CE(), plan)


DIVERGENCE = ("TrainingLossDivergence", "TrainingNonFinite")
# the overspend run trains until it reaches the ranker history's final validation loss, as an
# early-stopping retrain does
RANKER_HISTORY = ("ranker-001", "ranker-002")

CASES: tuple[Case, ...] = (
    # healthy history first, so the incidents of a job have previous retrains to compare with
    Case("ranker-001", "ranker", ranker(21, 2e-3)),
    Case("ranker-002", "ranker", ranker(22, 2e-3)),
    Case("regress-001", "regress", regress()),
    Case("ctr-001", "ctr", onecycle, note="OneCycle"),
    Case("embed-001", "embed", embed_base),
    Case(
        "embed-002",
        "embed",
        resumed("embed-001", full_state=True, save_as="embed-002"),
        note="resume with full optimizer state",
    ),  # fmt: skip
    Case("fp16-001", "fp16", fp16_scaler(None), note="fp16 autocast + GradScaler (CPU)"),
    Case("vision-001", "vision", cnn_steplr, note="CNN + BatchNorm, StepLR"),
    Case("seq-001", "seq", transformer_warmup_cosine, note="transformer, warm-up + cosine"),
    Case("plateau-001", "plateau", plateau, note="ReduceLROnPlateau"),
    Case("clip-001", "clip", clipping, note="gradient clipping"),
    Case("bf16-001", "bf16", bf16, note="bf16 autocast (CPU)"),
    Case("accum-001", "accum", accumulation, note="gradient accumulation x4"),
    Case("momentum-001", "momentum", momentum, note="momentum 0.9"),
    Case("centered-001", "centered", centered, note="centered"),
    Case("frozen-001", "frozen", frozen, note="frozen first layer"),
    # incidents
    Case(
        "loader-001",
        "loader",
        with_nan_batch(300, abort_after=20),
        "F1 divergence to NaN",
        300,
        DIVERGENCE,
        "a NaN record in the batch at step 300; the job aborts 20 steps later",
    ),
    Case(
        "loader-002",
        "loader",
        with_nan_batch(300, abort_after=1),
        "F1 NaN, job aborts at once",
        300,
        DIVERGENCE,
        "the job's guard aborts at the first NaN: ends before group_wait",
    ),
    Case(
        "regress-002",
        "regress",
        regress(lr_raise_at=300),
        "F1 finite divergence (lr x1.2/step)",
        300,
        DIVERGENCE,
        "lr raised x1.2 per step from step 300, capped at 1e3; stays finite",
    ),
    Case(
        "regress-003",
        "regress",
        regress(zero_features_at=300),
        "F1 finite divergence (gradients exactly 0)",
        300,
        DIVERGENCE,
        "all-zero features from step 300: every gradient is exactly 0, loss stays high",
    ),
    Case(
        "ranker-003",
        "ranker",
        ranker(23, 2e-5),
        "F2 slow convergence (lr 100x too low)",
        0,
        ("TrainingSlowConvergence",),
        "lr 2e-5 instead of 2e-3",
    ),
    Case(
        "ctr-002",
        "ctr",
        oscillating(300),
        "F3 oscillating updates (batch 2, lr x3)",
        300,
        ("GradNormVarianceOutOfRange",),
        "batches of 2 and a tripled lr from step 300",
    ),
    Case(
        "embed-003",
        "embed",
        resumed("embed-002", full_state=False),
        "F4 resume that lost its optimizer state",
        600,
        ("EffectiveLrJump",),
        "resumed from embed-002's weights without square_avg",
    ),
    Case(
        "fp16-002",
        "fp16",
        fp16_scaler(300),
        "F6 fp16 overflow under GradScaler",
        300,
        ("TrainingAmpStepsSkipped", "TrainingNonFinite"),
        "a x1e6 feature from step 300: float16 inf, every step skipped, scale collapses",
    ),
    Case(
        "etl-001",
        "etl",
        stall,
        "stall (data-loader deadlock)",
        250,
        ("TrainingStalled",),
        "no step after step 250 for 15 minutes, then killed",
    ),
    Case(
        "ranker-004",
        "ranker",
        ranker(24, 2.5e-4, steps=4000, stop_at=RANKER_HISTORY),
        "F5 resource overspend vs previous retrains",
        2 * RANKER_STEPS,
        ("TrainingOverspend",),
        "lr 8x lower: needs many times the steps of ranker-001/002 for their validation loss",
    ),
)


def record(case: Case, start: float, checkpoints: dict[str, dict[str, Any]]) -> Recording:
    """Train one case on a simulated clock starting at `start`."""
    recorder = Recorder()
    ctx = Context(case, SimClock(start), recorder, checkpoints)
    case.train(ctx)
    assert recorder.run is not None and recorder.status is not None
    return Recording(case, recorder.run, recorder.items, recorder.status)


def record_all(cases: Sequence[Case] = CASES, start: float = T0) -> list[Recording]:
    """Every case in order, one after another on one simulated timeline."""
    checkpoints: dict[str, dict[str, Any]] = {}
    out = []
    for case in cases:
        recording = record(case, start, checkpoints)
        out.append(recording)
        start = recording.end + GAP
    return out
