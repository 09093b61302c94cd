"""Checkpoints: atomic saves, a verified manifest, refusals that name the file, resume fidelity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import rmswatch
from rmswatch.checkpoint import MAGIC, read_manifest
from rmswatch.trainer_hooks.fingerprint import optimizer_fingerprint
from rmswatch.trainer_hooks.records import CheckpointRecord
from tests.helpers import subprocess_env
from tests.trainer_hooks.support import RecordingSink


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 4))


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = (torch.randn(32, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen))
        opt.zero_grad()
        _loss(model, batch).backward()
        opt.step()


def _trained(steps: int = 5) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2, momentum=0.9, centered=True)
    _train(model, opt, steps)
    return model, opt


def _fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model(seed=99)
    return model, torch.optim.RMSprop(model.parameters(), lr=1e-2, momentum=0.9, centered=True)


def test_round_trip_restores_state_step_and_extra_and_verifies_the_fingerprint(
    tmp_path: Path,
) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    size = rmswatch.save_checkpoint(path, model, opt, 5, extra={"epoch": 2, "note": "warm"})
    assert size == path.stat().st_size > 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600
    assert not list(tmp_path.glob("*.tmp"))
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["schema_version"] == 1 and manifest["step"] == 5
    assert manifest["world_size"] == 1 and manifest["torch_version"] == torch.__version__
    assert len(manifest["payload_sha256"]) == 64
    assert [layer["name"] for layer in manifest["fingerprint"]] == [
        "0.weight", "0.bias", "3.weight", "3.bias",
    ]  # fmt: skip

    model2, opt2 = _fresh()
    info = rmswatch.load_checkpoint(path, model2, opt2)
    assert isinstance(info, rmswatch.CheckpointInfo)
    assert info.step == 5 and info.extra == {"epoch": 2, "note": "warm"}
    assert info.fidelity.status == "verified" and info.fidelity.ok
    assert info.fidelity.replay == "not saved"
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert optimizer_fingerprint(opt2, model2) == optimizer_fingerprint(opt, model)
    # the resumed pair trains on exactly as the original does (same dropout masks)
    torch.manual_seed(3)
    _train(model, opt, 3, seed=7)
    torch.manual_seed(3)
    _train(model2, opt2, 3, seed=7)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_flipped_payload_byte_is_refused_as_a_bad_checksum(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 2000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(rmswatch.CheckpointError, match="bad checksum") as caught:
        rmswatch.load_checkpoint(path, *_fresh())
    assert caught.value.path == str(path) and str(path) in str(caught.value)


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(rmswatch.CheckpointError, match="truncated|corrupt"):
        rmswatch.load_checkpoint(path, *_fresh())


def test_a_torch_save_file_without_optimizer_state_is_refused(tmp_path: Path) -> None:
    model, _ = _trained()
    path = tmp_path / "demo.pt"
    # what the demo's resume scenario used to write: model and step, no optimizer
    torch.save({"model": model.state_dict(), "step": 100}, path)
    with pytest.raises(rmswatch.CheckpointError, match="optimizer state missing") as caught:
        rmswatch.load_checkpoint(path, *_fresh())
    assert str(path) in str(caught.value) and "square_avg" in caught.value.reason
    # a bare model state_dict, too
    torch.save(model.state_dict(), path)
    with pytest.raises(rmswatch.CheckpointError, match="optimizer state missing"):
        rmswatch.load_checkpoint(path, *_fresh())


def test_a_torch_save_file_with_optimizer_state_loads_unverified(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "plain.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 5}, path)
    info = rmswatch.load_checkpoint(path, *_fresh())
    assert info.step == 5 and info.fidelity.status == "unverified" and info.fidelity.ok


def test_a_newer_schema_is_refused_naming_the_versions(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    data = path.read_bytes()
    manifest = read_manifest(path)
    assert manifest is not None
    old = json.dumps(
        {k: v for k, v in manifest.items() if not k.startswith("_")}, sort_keys=True
    ).encode()
    assert old in data
    new = old.replace(b'"schema_version": 1', b'"schema_version": 9')
    path.write_bytes(data.replace(old, new))
    with pytest.raises(rmswatch.CheckpointError, match=r"schema version 9 is newer.*up to 1"):
        rmswatch.load_checkpoint(path, *_fresh())


def test_a_different_parameter_set_is_refused_naming_the_layers(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    torch.manual_seed(0)
    other = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    with pytest.raises(rmswatch.CheckpointError, match="mismatched parameter set") as caught:
        rmswatch.load_checkpoint(path, other, torch.optim.RMSprop(other.parameters()))
    assert "3.weight" in caught.value.reason and "2.weight" in caught.value.reason
    wide = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Dropout(0.2), nn.Linear(32, 4))
    with pytest.raises(rmswatch.CheckpointError, match="other shapes: 0.weight") as caught:
        rmswatch.load_checkpoint(path, wide, torch.optim.RMSprop(wide.parameters()))
    assert "[16, 8] -> [32, 8]" in caught.value.reason
    # nothing was loaded into the model a refused checkpoint was meant for
    assert wide[0].weight.shape == (32, 8)


def test_replaying_one_step_matches_bit_for_bit(tmp_path: Path) -> None:
    model, opt = _trained()
    batch = (torch.randn(32, 8), torch.randint(0, 4, (32,)))
    before = [p.detach().clone() for p in model.parameters()]
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5, replay_batch=batch, replay=_loss)
    # the replay ran on copies: the live model did not move
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    info = rmswatch.load_checkpoint(path, *_fresh(), replay=_loss)
    assert info.fidelity.replay == "match" and info.fidelity.status == "verified"
    assert "replayed step match" in info.fidelity.summary
    info = rmswatch.load_checkpoint(path, *_fresh())
    assert info.fidelity.replay == "not run" and info.fidelity.status == "verified"


def test_a_resume_that_does_not_step_the_same_is_a_fidelity_mismatch(tmp_path: Path) -> None:
    model, opt = _trained()
    batch = (torch.randn(32, 8), torch.randint(0, 4, (32,)))
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5, replay_batch=batch, replay=_loss)
    # same parameters and state, another hyperparameter: the replayed step differs
    model2 = _model(seed=99)
    opt2 = torch.optim.RMSprop(model2.parameters(), lr=1e-2, momentum=0.9, centered=True)
    info = rmswatch.load_checkpoint(path, model2, opt2, replay=lambda m, b: _loss(m, b) * 2)
    assert info.fidelity.fingerprint_match is True
    assert info.fidelity.replay == "mismatch" and info.fidelity.status == "mismatch"
    assert not info.fidelity.ok and "0.weight" in info.fidelity.summary


def test_loading_into_a_float64_model_reports_a_fingerprint_mismatch(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    model2 = _model(seed=99).double()
    opt2 = torch.optim.RMSprop(model2.parameters(), lr=1e-2, momentum=0.9, centered=True)
    info = rmswatch.load_checkpoint(path, model2, opt2)
    assert info.fidelity.status == "mismatch" and info.fidelity.fingerprint_match is False
    assert "0.weight (" in info.fidelity.summary and "parameters differ" in info.fidelity.summary


def test_save_and_load_are_recorded_through_the_watching_monitor(tmp_path: Path) -> None:
    model, opt = _trained()
    sink = RecordingSink()
    path = tmp_path / "ckpt.pt"
    with rmswatch.watch(opt, model=model, sinks=[sink], system_metrics=False) as monitor:
        rmswatch.save_checkpoint(path, model, opt, 5)
        monitor.flush()
    saves = sink.of(CheckpointRecord)
    assert [(r.action, r.ok, r.step) for r in saves] == [("save", True, 5)]
    assert saves[0].size_bytes == path.stat().st_size and saves[0].seconds > 0

    # a load before watch() is delivered by the monitor watch() builds next
    model2, opt2 = _fresh()
    rmswatch.load_checkpoint(path, model2, opt2)
    sink = RecordingSink()
    with rmswatch.watch(opt2, model=model2, sinks=[sink], system_metrics=False) as monitor:
        monitor.flush()
    loads = sink.of(CheckpointRecord)
    assert [(r.action, r.ok, r.step) for r in loads] == [("load", True, 5)]
    assert "fidelity verified" in loads[0].detail


def test_a_run_watched_after_a_load_continues_the_checkpoints_step_axis(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    model2, opt2 = _fresh()
    info = rmswatch.load_checkpoint(path, model2, opt2)
    with rmswatch.watch(opt2, model=model2, system_metrics=False) as monitor:
        _train(model2, opt2, 2)
        monitor.flush()
        assert monitor.run_info.resumed_from_step == info.step == 5
        assert [r.step for r in monitor.records] == [6, 7]
    # an explicit start_step wins
    rmswatch.load_checkpoint(path, model2, opt2)
    with rmswatch.watch(opt2, model=model2, system_metrics=False, start_step=100) as monitor:
        _train(model2, opt2, 1)
        monitor.flush()
        assert [r.step for r in monitor.records] == [101]


def test_a_refused_load_and_a_fidelity_mismatch_are_failed_loads(tmp_path: Path) -> None:
    model, opt = _trained()
    path = tmp_path / "ckpt.pt"
    rmswatch.save_checkpoint(path, model, opt, 5)
    model2 = _model(seed=99).double()
    opt2 = torch.optim.RMSprop(model2.parameters(), lr=1e-2, momentum=0.9, centered=True)
    sink = RecordingSink()
    with rmswatch.watch(opt2, model=model2, sinks=[sink], system_metrics=False) as monitor:
        rmswatch.load_checkpoint(path, model2, opt2)
        torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "plain.pt")
        with pytest.raises(rmswatch.CheckpointError):
            rmswatch.load_checkpoint(tmp_path / "plain.pt", model2, opt2)
        monitor.flush()
    loads = sink.of(CheckpointRecord)
    assert [(r.action, r.ok) for r in loads] == [("load", False), ("load", False)]
    assert "fidelity MISMATCH" in loads[0].detail
    assert "optimizer state missing" in loads[1].detail and loads[1].step == 3


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    import rmswatch

    path = sys.argv[1]
    torch.manual_seed(0)
    # ~40 MB of parameters and state: a save takes long enough to be killed in the middle
    model = nn.Sequential(nn.Linear(1024, 2048), nn.Linear(2048, 2048))
    opt = torch.optim.RMSprop(model.parameters())
    model(torch.randn(4, 1024)).sum().backward()
    opt.step()
    rmswatch.save_checkpoint(path, model, opt, 1)
    print("saved 1", flush=True)
    step = 2
    while True:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        rmswatch.save_checkpoint(path, model, opt, step)
        step += 1
    """
)


@pytest.mark.slow
def test_a_save_killed_midway_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "saved 1"
        deadline = time.monotonic() + 60
        # kill it while a temporary file exists: the rename has not happened yet
        while not list(tmp_path.glob(".ckpt.pt.*.tmp")):
            assert time.monotonic() < deadline, "no save in progress seen within 60s"
            assert child.poll() is None, "the saving process exited"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert list(tmp_path.glob(".ckpt.pt.*.tmp")), "the kill landed after the rename"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 2048), nn.Linear(2048, 2048))
    info = rmswatch.load_checkpoint(path, model, torch.optim.RMSprop(model.parameters()))
    assert info.step >= 1 and info.fidelity.status == "verified"
