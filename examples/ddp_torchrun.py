"""DistributedDataParallel with rmswatch, launched by torchrun (gloo on CPU, nccl on GPUs).

    torchrun --nproc_per_node 2 examples/ddp_torchrun.py --db sqlite:///rmswatch.db

Every rank calls watch() with the same arguments: every rank writes its steps into the same run
(the store keys steps by rank), exports /metrics (port base + rank, labelled with its rank), and
every 25 steps the ranks compare their optimizer state (a desync pages). Without --run-id, rank
0's run_id is agreed by all ranks.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import rmswatch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--prometheus-base-port", type=int, default=None)
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if backend == "nccl" else "cpu")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.RMSprop(ddp.parameters(), lr=1e-3)

    base = args.prometheus_base_port
    port = None if base is None else (0 if base == 0 else base + rank)  # 0: any free port
    monitor = rmswatch.watch(
        optimizer,
        model=model,
        job="ddp-example",
        run_id=args.run_id,
        store=args.db,
        prometheus_port=port,
        desync_every=25,
    )
    gen = torch.Generator().manual_seed(rank)
    for _ in range(args.steps):
        x = torch.randn(32, 16, generator=gen).to(device)
        y = x[:, :1] * 2.0
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        optimizer.step()
        monitor.record_loss(loss)
    monitor.close(status="succeeded")
    checks = [c.status for c in monitor.rank_checks]
    print(
        f"rank {rank}: {len(monitor.records)} records, loss {monitor.records[-1].loss:.4f}, "
        f"run {monitor.run_id}, desync checks {checks}"
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
