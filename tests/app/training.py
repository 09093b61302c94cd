"""A store filled by real short RMSprop trainings through `rmswatch.watch`, then one real
evaluation tick, so the app's browser tests read what a user's store would hold.

Job `resnet-retrain`: two healthy runs that finish, then `resnet-bad` (a higher learning rate)
whose `fc.weight` gradient gets one NaN injected at `NAN_STEP`; the NaN spreads through RMSprop's
state and the run keeps running, so the evaluation tick raises real alerts (the non-finite health
rule and the nonfinite-free-steps SLO burn). A job named like a `<script>` tag checks escaping.

The failure modes the views are read on, each in a job of its own: `ranker-diverge`, whose
learning rate someone raises by hand from `DIVERGE_FROM` until the loss climbs twenty orders of
magnitude and stays finite; `stall-run`, which stops stepping half-way and stays "running"; and
`empty-run`, which ended before its first step (no telemetry at all).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import torch

import rmswatch
from rmswatch.config import Config

JOB = "resnet-retrain"
GOOD_RUNS = ("resnet-good-1", "resnet-good-2")
BAD_RUN = "resnet-bad"
NAN_STEP = 61  # monitor steps count from 1: the NaN goes into the 61st optimizer step
NAN_LAYER = "fc.weight"
STEPS = 100
SCRIPT_LABEL = "<script>window.__pwned=1</script>"
# a parameter name plotly would render as markup (a link, bold) if a figure didn't escape it
MARKUP_LAYER_MODULE = "<a href=#pwned><b>evil</b></a>"
MARKUP_LAYER = f"{MARKUP_LAYER_MODULE}.weight"
DIVERGE_JOB, DIVERGE_RUN = "ranker-retrain", "ranker-diverge"
DIVERGE_FROM = 51  # from this step on, the LR is multiplied by 4 every other step (up to 1e4)
STALL_JOB, STALL_RUN = "feature-etl", "stall-run"
EMPTY_JOB, EMPTY_RUN = "empty-job", "empty-run"
SCENARIO_RUNS = {
    "healthy": GOOD_RUNS[1],
    "nan": BAD_RUN,
    "finite divergence": DIVERGE_RUN,
    "stalled": STALL_RUN,
    "empty": EMPTY_RUN,
}


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Linear(16, 32)
        self.fc = torch.nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv1(x)))


class MarkupNet(TinyNet):
    """TinyNet plus a layer whose name is HTML markup (torch allows any name without a dot)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module(MARKUP_LAYER_MODULE, torch.nn.Linear(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marked = self.get_submodule(MARKUP_LAYER_MODULE)
        return super().forward(x) + 0.0 * marked(x[:, :1])


@dataclass
class TrainedStore:
    url: str
    open_monitors: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for monitor in self.open_monitors:
            monitor.close(status="failed", detail="test over")


def train(
    url: str,
    *,
    job: str,
    run_id: str,
    lr: float,
    seed: int,
    steps: int = STEPS,
    nan_at: int | None = None,
    labels: dict[str, str] | None = None,
    finish: bool = True,
    raise_lr_from: int | None = None,
    markup_layer: bool = False,
) -> Any:
    """One real training; returns the monitor (still open when `finish` is False)."""
    torch.manual_seed(seed)
    model = MarkupNet() if markup_layer else TinyNet()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr)
    inputs = torch.randn(128, 16)
    targets = inputs[:, :4].sum(dim=1, keepdim=True)
    val_inputs = torch.randn(64, 16)
    val_targets = val_inputs[:, :4].sum(dim=1, keepdim=True)
    monitor = rmswatch.watch(
        optimizer,
        model=model,
        job=job,
        run_id=run_id,
        labels=labels or {"model": "tinynet", "cluster": "lab-a"},
        store=url,
        system_metrics=False,
        flush_interval=0.2,
    )
    for step in range(steps):
        if raise_lr_from is not None and step + 1 >= raise_lr_from and step % 2 == 1:
            # someone "fixes" a slow run by raising the learning rate by hand, again and again
            for group in optimizer.param_groups:
                group["lr"] = min(group["lr"] * 4.0, 1e4)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        if nan_at is not None and step + 1 == nan_at:
            assert model.fc.weight.grad is not None
            model.fc.weight.grad[0, 0] = float("nan")
        optimizer.step()
        monitor.record_loss(loss)
        if step % 20 == 19:
            with torch.no_grad():
                val = torch.nn.functional.mse_loss(model(val_inputs), val_targets)
            monitor.record_validation(val)
        if step % 40 == 39:
            started = time.perf_counter()
            buffer = io.BytesIO()
            torch.save(model.state_dict(), buffer)
            monitor.record_checkpoint(
                "save",
                seconds=time.perf_counter() - started,
                size_bytes=buffer.getbuffer().nbytes,
                path=f"/ckpt/{run_id}/step{step}.pt",
            )
    monitor.flush()
    if finish:
        monitor.close(status="succeeded")
    return monitor


def fill_by_training(url: str) -> TrainedStore:
    """The runs described in the module docstring, written to the store at `url`."""
    store = TrainedStore(url)
    for seed, run_id in enumerate(GOOD_RUNS):
        train(url, job=JOB, run_id=run_id, lr=1e-3, seed=seed)
    train(
        url,
        job=SCRIPT_LABEL,
        run_id="evil-run",
        lr=1e-3,
        seed=7,
        steps=30,
        labels={"model": SCRIPT_LABEL, "cluster": "lab-a"},
        markup_layer=True,
    )
    bad = train(url, job=JOB, run_id=BAD_RUN, lr=3e-3, seed=2, nan_at=NAN_STEP, finish=False)
    store.open_monitors.append(bad)
    train(url, job=DIVERGE_JOB, run_id=DIVERGE_RUN, lr=1e-3, seed=3, raise_lr_from=DIVERGE_FROM)
    stalled = train(url, job=STALL_JOB, run_id=STALL_RUN, lr=1e-3, seed=4, steps=50, finish=False)
    store.open_monitors.append(stalled)
    empty = rmswatch.watch(
        torch.optim.RMSprop(TinyNet().parameters(), lr=1e-3),
        job=EMPTY_JOB,
        run_id=EMPTY_RUN,
        store=url,
        system_metrics=False,
    )
    empty.close(status="failed", detail="crashed before its first step")
    return store


def evaluate_once(url: str, config: Config) -> Any:
    """One real alert evaluation tick (what `rmswatch evaluate` does); returns its result."""
    from rmswatch.alerting.scheduler import start_scheduler
    from rmswatch.store.engine import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    handle = start_scheduler(engine, config, start=False, transport=_no_receivers)
    try:
        return handle.tick()
    finally:
        handle.shutdown()
        engine.dispose()


def _no_receivers(*args: Any, **kwargs: Any) -> Any:
    # the test configs route nowhere; a delivery attempt would be a test bug
    raise AssertionError("no receiver is configured in the app tests")
