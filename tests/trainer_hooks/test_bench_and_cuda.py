"""The benchmark's --quick mode runs end to end; the CUDA path never syncs (skips without CUDA)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rmswatch.trainer_hooks import Monitor
from tests.helpers import REPO_ROOT, subprocess_env
from tests.trainer_hooks.support import tiny_model


@pytest.mark.slow
def test_benchmark_quick_mode_runs_the_rmswatch_variants_end_to_end() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_hooks.py"),
            "--quick",
            "--variants",
            "bare,rmswatch-1,rmswatch-10",
            "--width",
            "64",
            "--depth",
            "2",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for variant in ("bare", "rmswatch-1", "rmswatch-10"):
        assert any(line.startswith(variant) for line in result.stdout.splitlines()), variant
    assert "statistics alone (median ms): exact step" in result.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"momentum": 0.9, "centered": True},
        {"capturable": True},
        {"lr": torch.tensor(0.01), "weight_decay": 0.1},
    ],
)
def test_cuda_training_loop_never_synchronises_with_the_host(kw: dict[str, object]) -> None:
    model = tiny_model().cuda()
    if isinstance(kw.get("lr"), torch.Tensor):
        kw = kw | {"lr": kw["lr"].cuda() if kw.get("capturable") else kw["lr"]}  # type: ignore[union-attr]
    opt = torch.optim.RMSprop(model.parameters(), **{"lr": 1e-2, **kw})  # type: ignore[arg-type]
    bare = tiny_model().cuda()
    opt_bare = torch.optim.RMSprop(bare.parameters(), **{"lr": 1e-2, **kw})  # type: ignore[arg-type]
    x = torch.randn(5, 6, device="cuda")
    for m, o in ((bare, opt_bare), (model, opt)):  # warm-up allocations outside the check
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    mon = Monitor(opt, model=model, exact_every=2, sample_size=16)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            for m, o in ((bare, opt_bare), (model, opt)):
                o.zero_grad()
                loss = m(x).pow(2).mean()
                loss.backward()
                o.step()
            mon.record_loss(loss)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    mon.close()
    assert [r.step for r in mon.records] == [1, 2, 3, 4]
    assert all(r.loss is not None and r.grad_norm > 0 for r in mon.records)
    for a, b in zip(bare.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
