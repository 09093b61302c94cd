"""A training loop as people write it, watched by rmswatch: two param groups, OneCycleLR,
gradient clipping, mixed precision with a GradScaler, gradient accumulation, a frozen layer,
optionally torch.compile, and a resume from a checkpoint that continues the run's step axis.

    python examples/realistic_loop.py --db sqlite:///rmswatch.db [--steps 40] [--compile]
        [--inject-inf-at 5,12] [--amp fp16|bf16|off]

Each rmswatch line is marked `# rmswatch`; docs/hooks.md ("Your loop") explains each one.
Phase 1 trains the first half of the steps and saves a checkpoint; phase 2 builds everything
afresh, loads the checkpoint and continues the same run (same run_id, `start_step`).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import rmswatch

ACCUMULATE = 4  # micro-batches per optimizer step
MAX_NORM = 1.0


def build(compile_model: bool) -> tuple[nn.Module, nn.Module, torch.optim.RMSprop]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    )
    model[0].requires_grad_(False)  # a frozen layer: not in the optimizer, so not recorded
    convs = [p for p in model[2].parameters()]
    head = [p for p in model[6].parameters()]
    optimizer = torch.optim.RMSprop(
        [{"params": convs, "lr": 1e-3}, {"params": head, "lr": 3e-3}],
        alpha=0.99,
        momentum=0.9,
    )
    runnable = torch.compile(model) if compile_model else model
    return model, runnable, optimizer


def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(step)
    return [
        (torch.randn(16, 1, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen))
        for _ in range(ACCUMULATE)
    ]


def train(
    args: argparse.Namespace,
    first: int,
    last: int,
    run_id: str,
    checkpoint: Path,
    resume: bool,
) -> rmswatch.Monitor:
    model, runnable, optimizer = build(args.compile)
    amp = args.amp != "off"
    dtype = torch.float16 if args.amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cpu", enabled=args.amp == "fp16", init_scale=2.0**14)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[3e-3, 1e-2], total_steps=args.steps
    )
    start = 0
    if resume:
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = state["step"]
    monitor = rmswatch.watch(  # rmswatch
        optimizer,
        model=runnable,  # compiled or not: the names are the model's own ("2.weight")
        job="realistic-loop",
        run_id=run_id,
        store=args.db,
        scaler=scaler,  # skipped steps and the loss scale
        start_step=start or None,  # a resumed run continues its step axis
    )
    inject = {int(s) for s in args.inject_inf_at.split(",") if s}
    for step in range(first, last + 1):
        total_loss = torch.zeros(())
        for x, y in batches(step):
            with torch.autocast("cpu", dtype=dtype, enabled=amp):
                loss = nn.functional.cross_entropy(runnable(x).float(), y)
            scaler.scale(loss / ACCUMULATE).backward()
            total_loss += loss.detach() / ACCUMULATE
        if step in inject:
            grad = model[6].weight.grad
            assert grad is not None
            grad[0, 0] = math.inf  # an fp16 overflow, as the scaler would see it
        scaler.unscale_(optimizer)
        total = nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        monitor.record_grad_norm(total, max_norm=MAX_NORM)  # rmswatch: pre-clip norm, no sync
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        monitor.record_loss(total_loss)  # rmswatch: mean over the micro-batches, no sync
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": last,
        },
        checkpoint,
    )
    monitor.record_checkpoint("save", step=last, path=str(checkpoint))
    monitor.flush()
    return monitor


def summary(records: list[Any]) -> str:
    skipped = [r.step for r in records if r.skipped]
    clipped = sum(r.clipped for r in records)
    return (
        f"steps {records[0].step}-{records[-1].step}: {len(records)} records, "
        f"{clipped} clipped, skipped at {skipped}, "
        f"loss scale {records[0].loss_scale} -> {records[-1].loss_scale}, "
        f"lr {records[0].lrs} -> {records[-1].lrs}, layers {list(records[-1].layers)[:2]}..."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="SQLAlchemy URL of the run store")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="train a torch.compile'd model")
    parser.add_argument("--amp", choices=("fp16", "bf16", "off"), default="fp16")
    parser.add_argument("--inject-inf-at", default="5,12", help="steps with an inf gradient")
    args = parser.parse_args()
    half = args.steps // 2
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "ckpt.pt"
        first = train(args, 1, half, "realistic-1", checkpoint, resume=False)
        first.close("succeeded")
        print("phase 1:", summary(first.records))
        second = train(args, half + 1, args.steps, "realistic-1", checkpoint, resume=True)
        second.close("succeeded")
        print("phase 2 (resumed):", summary(second.records))


if __name__ == "__main__":
    main()
