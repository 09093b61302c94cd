"""A real (tiny) RMSprop training that writes its telemetry to a store through `rmswatch.watch`.

`python -m tests.integration.store_training_child URL RUN_ID [--flush S] [--sleep S]` prints
`ready`, then `step N TIME` after each optimizer step, forever: the test kills it.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import rmswatch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("--flush", type=float, default=1.0)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    inputs, targets = torch.randn(64, 8), torch.randn(64, 1)
    monitor = rmswatch.watch(
        optimizer,
        model=model,
        job="sigkill",
        run_id=args.run_id,
        store=args.url,
        flush_interval=args.flush,
        system_metrics=False,
    )
    print("ready", flush=True)
    while True:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        monitor.record_loss(loss)
        print(f"step {monitor.step} {time.time()!r}", flush=True)
        if args.sleep:
            time.sleep(args.sleep)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
