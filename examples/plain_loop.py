"""A plain PyTorch training loop with rmswatch: the three lines marked `# rmswatch`.

python examples/plain_loop.py --db sqlite:///rmswatch.db --steps 200
rmswatch serve --db sqlite:///rmswatch.db      # then open http://127.0.0.1:8050
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import rmswatch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="sqlite:///rmswatch.db")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prometheus-port", type=int, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(2048, 20)
    y = (x[:, :5].sum(dim=1, keepdim=True) > 0).float()  # a learnable signal
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()

    with rmswatch.watch(  # rmswatch
        optimizer,
        model=model,
        job="example-retrain",
        store=args.db,
        prometheus_port=args.prometheus_port,
    ) as monitor:
        for step in range(1, args.steps + 1):
            idx = torch.randint(0, len(x), (64,))
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            monitor.record_loss(loss)  # rmswatch: no host sync
            if step % 50 == 0:
                with torch.no_grad():
                    monitor.record_validation(loss_fn(model(x), y).item())  # rmswatch
    print(
        f"run {monitor.run_id}: {len(monitor.records)} records, last {monitor.records[-1].loss:.4f}"
    )


if __name__ == "__main__":
    main()
