"""Training loops as people write them: clipping, GradScaler, accumulation, resume, wrappers.

Every expected number here comes from torch itself (what clip_grad_norm_ returned, the scaler's
own scale, the gradients the test captured) or from a second, unmonitored run of the same loop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch

import rmswatch
from rmswatch.trainer_hooks.monitor import Monitor, user_parameter_names
from tests.trainer_hooks.support import RecordingSink, batches, tiny_model

LAYERS = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8).clone()


def _two_groups(model: torch.nn.Module) -> torch.optim.RMSprop:
    params = list(model.parameters())
    return torch.optim.RMSprop(
        [{"params": params[:2], "lr": 1e-2}, {"params": params[2:], "lr": 3e-3}],
        momentum=0.5,
        alpha=0.9,
    )


def test_grad_norm_before_clip_is_what_clip_grad_norm_returned_and_layers_follow_torch() -> None:
    model = tiny_model()
    opt = _two_groups(model)
    monitor = Monitor(opt, model=model, exact_every=1)
    returned: list[float] = []
    before: list[dict[str, float]] = []
    after: list[float] = []
    max_norm = 1.0
    for i, x in enumerate(batches(12)):
        opt.zero_grad()
        scale = 40.0 if i % 2 == 0 else 0.01  # big steps clip, small ones do not
        loss = model(x).pow(2).mean() * scale
        loss.backward()
        before.append(
            {n: float(torch.linalg.vector_norm(p.grad)) for n, p in model.named_parameters()}
        )
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        monitor.record_grad_norm(total)
        returned.append(float(total))
        after.append(
            math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))  # type: ignore[union-attr]
        )
        opt.step()
        monitor.record_loss(loss)
    monitor.close()
    records = monitor.records
    assert [r.step for r in records] == list(range(1, 13))
    assert [r.clipped for r in records] == [t > max_norm for t in returned]
    assert any(r.clipped for r in records) and not all(r.clipped for r in records)
    for rec, total, layers, post in zip(records, returned, before, after, strict=True):
        assert rec.grad_norm_before_clip is not None
        assert rec.grad_norm_before_clip == pytest.approx(total, rel=1e-6)
        # grad_norm stays what the optimizer used: the clipped gradients
        assert rec.grad_norm == pytest.approx(post, rel=1e-5)
        for name, norm in layers.items():
            assert rec.layers[name].grad_norm_before_clip == pytest.approx(norm, rel=1e-5), name


def test_clipped_without_max_norm_is_inferred_from_the_two_norms() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    monitor = Monitor(opt, model=model)
    returned = []
    for i, x in enumerate(batches(6)):
        opt.zero_grad()
        (model(x).pow(2).mean() * (30.0 if i % 2 else 0.01)).backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        returned.append(float(total))
        monitor.record_grad_norm(total)
        opt.step()
    monitor.close()
    assert [r.clipped for r in monitor.records] == [t > 0.5 for t in returned]


def test_without_record_grad_norm_the_pre_clip_fields_say_unknown() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    monitor = Monitor(opt, model=model)
    for x in batches(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    monitor.close()
    for rec in monitor.records:
        assert rec.grad_norm_before_clip is None and rec.clipped is False
        assert all(s.grad_norm_before_clip is None for s in rec.layers.values())
        assert rec.skipped is False and rec.loss_scale is None and rec.full is True


@pytest.mark.parametrize("bad", [torch.ones(2), "3.0", True], ids=["vector", "string", "bool"])
def test_record_grad_norm_refuses_what_is_not_a_norm(bad: object) -> None:
    model = tiny_model()
    monitor = Monitor(torch.optim.RMSprop(model.parameters()), model=model)
    with pytest.raises(ValueError, match="record_grad_norm: total_norm"):
        monitor.record_grad_norm(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_norm"):
        monitor.record_grad_norm(1.0, max_norm=0)
    monitor.close()


INJECT = {
    5: ("0.weight", [(0, 0), (1, 2), (3, 4)], math.inf),
    12: ("2.bias", [(4,), (7,)], math.nan),
}


def _amp_loop(
    monitored: bool, steps: int = 16
) -> tuple[torch.nn.Module, list[float], list[float], list[tuple[float, ...]], Monitor | None]:
    """A CPU GradScaler loop (bf16 autocast) with inf/NaN injected into the scaled gradients
    at loop steps 5 and 12; returns the model, the loss and the scale of every loop step."""
    model = tiny_model()
    opt = _two_groups(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=4)
    monitor = Monitor(opt, model=model, scaler=scaler, exact_every=1) if monitored else None
    losses: list[float] = []
    scales: list[float] = []
    lrs: list[tuple[float, ...]] = []
    params = dict(model.named_parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (1 + i))
    for step, x in enumerate(batches(steps), start=1):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().pow(2).mean() + step  # each step's loss is told apart
        scales.append(scaler.get_scale())
        lrs.append(tuple(g["lr"] for g in opt.param_groups))
        scaler.scale(loss).backward()
        if step in INJECT:
            name, where, value = INJECT[step]
            grad = params[name].grad
            assert grad is not None
            for index in where:
                grad[index] = value
        scaler.unscale_(opt)
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        if monitor is not None:
            monitor.record_grad_norm(total, max_norm=10.0)
        scaler.step(opt)
        scaler.update()
        scheduler.step()
        losses.append(float(loss.detach()))
        if monitor is not None:
            monitor.record_loss(loss)
    if monitor is not None:
        monitor.close()
    return model, losses, scales, lrs, monitor


def test_grad_scaler_skipped_steps_are_recorded_at_their_own_step_with_losses_aligned() -> None:
    _, losses, scales, lrs, monitor = _amp_loop(monitored=True)
    assert monitor is not None
    records = monitor.records
    assert [r.step for r in records] == list(range(1, 17))
    assert [r.step for r in records if r.skipped] == [5, 12]
    assert monitor.skipped_steps == 2 and monitor.step == 16
    for rec, loss, scale in zip(records, losses, scales, strict=True):
        assert rec.loss == loss, rec.step  # the loss of its own loop step, not a neighbour's
        assert rec.loss_scale == scale, rec.step
    # a skip halves the scale (backoff 0.5), so the record after each skip shows it
    assert records[5].loss_scale == records[4].loss_scale / 2
    for step, (name, where, _) in INJECT.items():
        rec = records[step - 1]
        assert rec.layers[name].nonfinite_grad == len(where)
        assert sum(s.nonfinite_grad for s in rec.layers.values()) == len(where)
        assert rec.nonfinite["grad"] == len(where)
        assert rec.update_norm == 0.0 and rec.full
    # a skipped step's lr is the one it would have used, not the scheduler's next one
    assert [r.lrs for r in records] == lrs
    taken = [r for r in records if not r.skipped]
    assert all(r.nonfinite["grad"] == 0 and r.update_norm > 0 for r in taken)


def test_grad_scaler_run_is_bit_identical_with_and_without_the_monitor() -> None:
    with_monitor, *_ = _amp_loop(monitored=True)
    without, *_ = _amp_loop(monitored=False)
    for (name, a), b in zip(with_monitor.named_parameters(), without.parameters(), strict=True):
        assert torch.equal(_bits(a), _bits(b)), name


def test_close_gives_the_scaler_its_own_step_back() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters())
    scaler = torch.amp.GradScaler("cpu")
    monitor = Monitor(opt, model=model, scaler=scaler)
    assert "step" in vars(scaler) and "unscale_" in vars(scaler)
    monitor.close()
    assert "step" not in vars(scaler) and "unscale_" not in vars(scaler)


def test_a_scaler_of_the_wrong_kind_is_refused_naming_the_field() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="scaler=.*GradScaler"):
        Monitor(torch.optim.RMSprop(model.parameters()), scaler=object())


def test_record_loss_twice_for_one_step_warns_once_per_run_and_keeps_the_last() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    monitor = Monitor(opt, model=model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, x in enumerate(batches(3)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            monitor.record_loss(math.nan)  # the stray one
            monitor.record_loss(float(i))
    monitor.close()
    twice = [w for w in caught if "record_loss() called twice" in str(w.message)]
    assert len(twice) == 1 and "step 1" in str(twice[0].message)
    assert [r.loss for r in monitor.records] == [0.0, 1.0, 2.0]


def test_accumulation_gives_one_record_per_optimizer_step_with_the_loss_given() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    monitor = Monitor(opt, model=model)
    data = batches(12)
    means = []
    for start in range(0, 12, 4):
        opt.zero_grad()
        total = torch.zeros(())
        for x in data[start : start + 4]:
            loss = model(x).pow(2).mean()
            (loss / 4).backward()
            total += loss.detach()
        opt.step()
        monitor.record_loss(total / 4)  # the mean over the micro-batches, no sync
        means.append(float(total / 4))
    monitor.close()
    assert [r.step for r in monitor.records] == [1, 2, 3]
    assert [r.loss for r in monitor.records] == means


def test_start_step_continues_the_step_axis_of_a_resumed_run() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    sink = RecordingSink()
    monitor = Monitor(opt, model=model, start_step=600, every=2, sinks=[sink])
    assert monitor.step == 600
    for x in batches(5):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        monitor.record_loss(float(monitor.step))
    monitor.record_validation(0.5)
    monitor.close()
    assert [r.step for r in monitor.records] == [601, 603, 605]
    assert [r.loss for r in monitor.records] == [601.0, 603.0, 605.0]
    assert sink.run is not None and sink.run.resumed_from_step == 600
    assert sink.of(rmswatch.trainer_hooks.records.ValidationRecord)[0].step == 605
    with pytest.raises(ValueError, match="start_step"):
        Monitor(opt, start_step=-1)


def _train_names(model: torch.nn.Module, params_of: torch.nn.Module) -> list[str]:
    opt = torch.optim.RMSprop(params_of.parameters(), lr=1e-3)
    monitor = Monitor(opt, model=model)
    for x in batches(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    monitor.close()
    return list(monitor.records[-1].layers)


@pytest.mark.slow
def test_a_compiled_model_records_the_users_own_names() -> None:
    plain = tiny_model()
    # the names come from the OptimizedModule wrapper, the same for every backend; "eager"
    # keeps the test from spending a minute in Inductor on a loaded machine
    compiled = torch.compile(plain, backend="eager")
    assert next(iter(dict(compiled.named_parameters()))).startswith("_orig_mod.")
    assert _train_names(compiled, plain) == LAYERS


def test_data_parallel_and_checkpoint_wrappers_yield_plain_names() -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    dp = torch.nn.DataParallel(tiny_model())
    assert next(iter(dict(dp.named_parameters()))).startswith("module.")
    assert _train_names(dp, dp) == LAYERS
    inner = tiny_model()
    wrapped = torch.nn.Sequential(checkpoint_wrapper(inner))
    assert "_checkpoint_wrapped_module" in next(iter(dict(wrapped.named_parameters())))
    assert list(user_parameter_names(wrapped).values()) == [f"0.{n}" for n in LAYERS]


def _with_process_group(body: Callable[[], None], tmp_path: object) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        body()
    finally:
        dist.destroy_process_group()


def test_ddp_and_fsdp_wrapped_models_yield_plain_names(tmp_path: object) -> None:
    def body() -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        ddp = torch.nn.parallel.DistributedDataParallel(tiny_model())
        assert next(iter(dict(ddp.named_parameters()))).startswith("module.")
        assert _train_names(ddp, ddp) == LAYERS
        # FSDP2 keeps the module tree; FSDP1 needs an accelerator (its `_fsdp_wrapped_module.`
        # component is stripped by the same rule as activation checkpointing's, tested above)
        sharded = tiny_model()
        fully_shard(sharded, mesh=init_device_mesh("cpu", (1,)))
        assert list(user_parameter_names(sharded).values()) == LAYERS

    _with_process_group(body, tmp_path)


def _hooked_loop(
    grad_hooks: bool, *, accumulate: int = 1, amp: bool = False, steps: int = 8
) -> tuple[torch.nn.Module, list[float], list[dict[str, float]], Monitor | None]:
    """A clipping loop with no record_grad_norm line; returns what clip_grad_norm_ returned and
    the per-layer norms the test measured itself before clipping."""
    model = tiny_model()
    opt = _two_groups(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if amp else None
    monitor = (
        Monitor(opt, model=model, every=2, grad_hooks=True, scaler=scaler) if grad_hooks else None
    )
    returned: list[float] = []
    before: list[dict[str, float]] = []
    data = batches(steps * accumulate)
    for step in range(steps):
        opt.zero_grad()
        for x in data[step * accumulate : (step + 1) * accumulate]:
            loss = model(x).pow(2).mean() * (30.0 if step % 4 == 0 else 0.01) / accumulate
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.unscale_(opt)
        before.append({n: float(p.grad.norm()) for n, p in model.named_parameters()})  # type: ignore[union-attr]
        returned.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    if monitor is not None:
        monitor.close()
    return model, returned, before, monitor


@pytest.mark.parametrize(
    ("accumulate", "amp"), [(1, False), (3, False), (1, True)], ids=["plain", "accum", "amp"]
)
def test_grad_hooks_measure_the_pre_clip_norms_with_no_user_line(
    accumulate: int, amp: bool
) -> None:
    _, returned, before, monitor = _hooked_loop(True, accumulate=accumulate, amp=amp)
    assert monitor is not None
    records = monitor.records
    assert [r.step for r in records] == [1, 3, 5, 7]  # every=2: hooks work before these only
    for rec in records:
        total, layers = returned[rec.step - 1], before[rec.step - 1]
        assert rec.grad_norm_before_clip == pytest.approx(total, rel=1e-6)
        assert rec.clipped == (total > 1.0)
        for name, norm in layers.items():
            assert rec.layers[name].grad_norm_before_clip == pytest.approx(norm, rel=1e-5)
    assert any(r.clipped for r in records) and not all(r.clipped for r in records)


def test_grad_hooks_leave_training_bit_identical_and_go_at_close() -> None:
    with_hooks, *_ = _hooked_loop(True)
    without, *_ = _hooked_loop(False)
    for (name, a), b in zip(with_hooks.named_parameters(), without.parameters(), strict=True):
        assert torch.equal(_bits(a), _bits(b)), name
    model = tiny_model()
    monitor = Monitor(torch.optim.RMSprop(model.parameters()), model=model, grad_hooks=True)
    monitor.close()
    model(batches(1)[0]).sum().backward()  # no hook left to run
    assert monitor._hook_norms == {}
