"""Lightning 2.x with rmswatch: the real callback on a real `Trainer.fit` (`rmswatch[lightning]`).

    python examples/lightning_callback.py [--db sqlite:///rmswatch.db] [--precision bf16-mixed]

`RmswatchCallback` attaches at `on_fit_start` to the trainer's RMSprop and records, per
optimizer step, the loss (mean over the accumulated micro-batches), the pre-clip gradient norm
Lightning computes for `gradient_clip_val`, the validation loss, and closes the run with the
fit's outcome. See `rmswatch/integrations/lightning.py`.
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from rmswatch.integrations.lightning import RmswatchCallback


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x).float(), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x).float(), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.parameters(), lr=1e-3, momentum=0.9)


def loader(n: int, seed: int) -> torch.utils.data.DataLoader[Any]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=gen)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="SQLAlchemy URL of the run store")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    callback = RmswatchCallback(job="lightning-example", store=args.db)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        precision=args.precision,
        gradient_clip_val=1.0,
        accumulate_grad_batches=2,
        val_check_interval=50,
        limit_val_batches=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(Regressor(), loader(3200, 0), loader(64, 1))
    monitor = callback.monitor
    assert monitor is not None
    records = monitor.records
    clipped = sum(r.clipped for r in records)
    print(
        f"{len(records)} records; last grad norm {records[-1].grad_norm:.4f} "
        f"(before clipping {records[-1].grad_norm_before_clip:.4f}); "
        f"{clipped} clipped steps; last loss {records[-1].loss:.4f}"
    )


if __name__ == "__main__":
    main()
