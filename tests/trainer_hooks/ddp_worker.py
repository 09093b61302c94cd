"""One rank of the 2-rank torchrun tests (gloo): a DDP loop under `rmswatch.watch`.

    python -m torch.distributed.run --nproc_per_node 2 tests/trainer_hooks/ddp_worker.py \
        --db sqlite:///x.db --out DIR [--perturb-rank 1 --perturb-step 12] [--extra-steps 10]

Writes DIR/rank<N>.json: the run_id this rank used and its completed desync checks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import rmswatch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--desync-every", type=int, default=5)
    parser.add_argument("--perturb-rank", type=int, default=None)
    parser.add_argument("--perturb-step", type=int, default=None)
    parser.add_argument("--extra-steps", type=int, default=0, help="rank 0 only, no all-reduce")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.RMSprop(ddp.parameters(), lr=1e-3)
    monitor = rmswatch.watch(
        optimizer, model=model, job="ddp-test", store=args.db, every=1,
        desync_every=args.desync_every, system_metrics=False, flush_interval=0.2,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(rank)  # each rank its own shard of data

    def step(i: int) -> None:
        x = torch.randn(32, 16, generator=gen)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(x), x[:, :1] * 2.0)
        loss.backward()
        optimizer.step()
        monitor.record_loss(loss)
        if rank == args.perturb_rank and i == args.perturb_step:
            with torch.no_grad():  # a silent corruption of one rank's RMS state
                optimizer.state[model[0].weight]["square_avg"].mul_(1.5)

    for i in range(1, args.steps + 1):
        step(i)
    if rank == 0 and args.extra_steps:
        with ddp.no_sync():  # rank 0 steps on alone: the ranks are now uneven
            for i in range(args.steps + 1, args.steps + args.extra_steps + 1):
                step(i)
    # let checks that are answered by now arrive (the monitor never waits for them)
    time.sleep(0.5)
    monitor.close(status="succeeded")
    checks = [
        {"step": c.step, "status": c.status, "ranks": list(c.ranks), "layers": list(c.layers),
         "detail": c.detail}
        for c in monitor.rank_checks
    ]  # fmt: skip
    result = {
        "rank": rank, "run_id": monitor.run_id, "records": len(monitor.records), "checks": checks,
        "stopped": monitor.desync_checks_stopped,
    }  # fmt: skip
    (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
