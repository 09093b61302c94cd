"""Real RMSProp trainings for the demo: healthy retrains and four ways a retrain goes wrong.

Each scenario trains a small MLP on a generated teacher-student task (a learnable signal; nothing
is downloaded) under `rmswatch.watch`, so every number the demo shows was really measured.
Run one with `python -m rmswatch.demo.scenarios --scenario NAME --db URL --run-id ID`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import torch
from torch import nn

import rmswatch
from rmswatch._validation import ArgumentError

SCENARIOS: tuple[str, ...] = ("healthy", "diverge", "slow", "resume", "stall")
# After the first non-finite loss the diverging job keeps stepping (burning GPU time, as real
# jobs without a guard do) for this long before its own guard aborts it: long enough for the
# server's evaluation ticks to see a running job with NaN and page.
NONFINITE_SECONDS_BEFORE_ABORT = 12.0
NONFINITE_STEP_DELAY = 0.1


@dataclass(frozen=True)
class Plan:
    steps: int
    lr: float = 2e-3
    alpha: float = 0.99
    validate_every: int = 25
    checkpoint_every: int = 100
    step_delay: float = 0.0
    seed: int = 0


def make_task(n_train: int = 16384, n_val: int = 1024) -> tuple[torch.Tensor, ...]:
    """A teacher network labels Gaussian inputs: learnable, deterministic, no downloads. Large
    enough that a healthy retrain does not overfit (4096 samples did: its validation loss
    ended well above its best, a fair ValidationLossRegression ticket on a "healthy" run)."""
    gen = torch.Generator().manual_seed(1234)  # the task is the same for every run of a job
    teacher = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.8)
        x = torch.randn(n_train + n_val, 32, generator=gen)
        y = teacher(x).argmax(dim=1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 10)
    )


def batches(
    x: torch.Tensor, y: torch.Tensor, size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - size + 1, size):
            idx = order[start : start + size]
            yield x[idx], y[idx]


def _checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    # atomic, with a manifest; its size and latency go to the watching monitor by themselves
    rmswatch.save_checkpoint(path, model, opt, step)


def _resume(
    checkpoint: Path, export: Path, model: nn.Module, opt: torch.optim.Optimizer, plan: Plan
) -> tuple[int, str]:
    """Resume as this retrain's launcher does: from the serving export of the job's last good
    checkpoint, which keeps the weights and the step but not the optimizer state.

    `rmswatch.load_checkpoint` refuses the export (the refused load pages as
    CheckpointResumeMismatch); the launcher then falls back to the weights alone, as it always
    silently did: square_avg restarts at zero, so effective learning rates jump.
    Returns the step to continue from and the fidelity verdict.
    """
    if checkpoint.exists() and not export.exists():
        source = make_model(plan.seed)
        source_opt = torch.optim.RMSprop(source.parameters(), lr=plan.lr, alpha=plan.alpha)
        good = rmswatch.load_checkpoint(checkpoint, source, source_opt)
        torch.save({"model": source.state_dict(), "step": good.step}, export)
    if not export.exists():
        return 0, "nothing to resume from: no checkpoint of this job yet"
    try:
        info = rmswatch.load_checkpoint(export, model, opt)
    except rmswatch.CheckpointError as exc:
        state = torch.load(export, weights_only=True)
        model.load_state_dict(state["model"])
        return int(state["step"]), f"REFUSED ({exc.reason}); resumed from the weights alone"
    return info.step, info.fidelity.summary


def run(
    scenario: str,
    *,
    db: str,
    run_id: str,
    job: str,
    workdir: Path,
    quick: bool,
    labels: dict[str, str],
    seed: int = 0,
) -> str:
    """Train one scenario to its end; returns the final run status."""
    if scenario not in SCENARIOS:
        raise ArgumentError(f"scenario={scenario!r}: expected one of {', '.join(SCENARIOS)}")
    torch.set_num_threads(1)
    steps = 160 if quick else 600
    plan = {
        "healthy": Plan(steps=steps, seed=seed),
        "diverge": Plan(steps=steps * 4, seed=seed),
        # these two misbehave slowly: give the server's ticks time to watch them run
        "slow": Plan(steps=steps, alpha=0.99999, lr=3e-3, seed=seed, step_delay=0.05),
        "resume": Plan(steps=steps, seed=seed, step_delay=0.05),
        "stall": Plan(steps=steps, seed=seed),
    }[scenario]
    x, y, x_val, y_val = make_task()
    model = make_model(plan.seed)
    opt = torch.optim.RMSprop(model.parameters(), lr=plan.lr, alpha=plan.alpha, foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    start_step = 0
    checkpoint_path = workdir / f"{job}.pt"

    if scenario == "resume":
        start_step, verdict = _resume(
            checkpoint_path, workdir / f"{job}-weights.pt", model, opt, plan
        )
        # not JSON: the demo prints it under the run's progress bar
        print(f"resuming at step {start_step}; resume fidelity: {verdict}", flush=True)
    # the load above (refused or not) is recorded through this monitor; records continue the
    # checkpoint's step axis
    monitor = rmswatch.watch(
        opt, model=model, job=job, run_id=run_id, labels=labels, store=db, every=1,
        start_step=start_step or None,
    )  # fmt: skip

    print(json.dumps({"run_id": run_id, "event": "start", "steps": plan.steps}), flush=True)
    stop = {"requested": False}

    def _terminate(signum: int, frame: FrameType | None) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _terminate)
    status = "succeeded"
    detail = ""
    data = batches(x, y, 64, plan.seed)
    first_nonfinite: int | None = None
    nonfinite_since = 0.0
    try:
        for i in range(plan.steps):
            if stop["requested"]:
                status, detail = "failed", "terminated by the operator"
                break
            step = start_step + i + 1
            if scenario == "diverge" and i >= plan.steps // 3:
                # someone "fixed" a slow run by raising the learning rate mid-run, x3 a step up
                # to 1e38 (torch refuses an lr beyond float32's range): an update of any weight
                # with a non-zero gradient is then inf on every CPU (IEEE), whatever the rounding
                # before; the loss climbing many decades on the way is a (finite) divergence page
                for group in opt.param_groups:
                    group["lr"] = min(group["lr"] * 3.0, 1e38)
            if scenario == "stall" and i == plan.steps // 2:
                # a data-loader deadlock: the process is alive, no step ever comes
                print(json.dumps({"run_id": run_id, "event": "stalled", "step": step}), flush=True)
                while not stop["requested"]:
                    time.sleep(0.2)
                status, detail = (
                    "failed",
                    f"stalled at step {step}; terminated by the operator",
                )
                break
            xb, yb = next(data)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            monitor.record_loss(loss)
            if step % plan.validate_every == 0:
                with torch.no_grad():
                    val = loss_fn(model(x_val), y_val).item()
                monitor.record_validation(val, step=step)
            if scenario == "healthy" and step % plan.checkpoint_every == 0:
                _checkpoint(checkpoint_path, model, opt, step)
            if scenario == "diverge" and first_nonfinite is None and not math.isfinite(loss.item()):
                first_nonfinite, nonfinite_since = step, time.monotonic()
            if first_nonfinite is not None:
                if time.monotonic() - nonfinite_since >= NONFINITE_SECONDS_BEFORE_ABORT:
                    status, detail = (
                        "failed",
                        f"loss non-finite since step {first_nonfinite}; aborted",
                    )
                    break
                time.sleep(NONFINITE_STEP_DELAY)
            if plan.step_delay:
                time.sleep(plan.step_delay)
            if step % 20 == 0:
                print(
                    json.dumps(
                        {"run_id": run_id, "step": step, "done": i + 1, "loss": float(loss.item())}
                    ),
                    flush=True,
                )
    except Exception as exc:  # a crash is recorded as such, then re-raised
        monitor.close(status="crashed", detail=f"{type(exc).__name__}: {exc}")
        raise
    monitor.close(status=status, detail=detail)
    print(json.dumps({"run_id": run_id, "event": "finished", "status": status}), flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--label", action="append", default=[], help="key=value")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    labels = dict(item.split("=", 1) for item in args.label)
    run(
        args.scenario,
        db=args.db,
        run_id=args.run_id,
        job=args.job,
        workdir=args.workdir,
        quick=args.quick,
        labels=labels,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
