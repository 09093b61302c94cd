"""Statistics: bit-identical training, agreement with the float64 reference, NaN/Inf counts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rmswatch.trainer_hooks import Monitor, reference
from rmswatch.trainer_hooks.packing import decode
from rmswatch.trainer_hooks.plan import StatsPlan, choose_plan
from rmswatch.trainer_hooks.records import RMS_EDGES, LayerStats
from rmswatch.trainer_hooks.selection import weighted_lower_quantiles
from tests.trainer_hooks.support import batches, tiny_model, train

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "weight_decay": {"weight_decay": 0.1},
    "maximize": {"maximize": True},
    "tensor-lr": {"lr": torch.tensor(0.01)},
    "everything": {"momentum": 0.5, "centered": True, "weight_decay": 0.05, "maximize": True},
    "everything-for-loop": {
        "momentum": 0.5,
        "centered": True,
        "weight_decay": 0.05,
        "maximize": True,
        "foreach": False,
    },
    "wd-centered-for-loop": {"centered": True, "weight_decay": 0.1, "foreach": False},
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CPU = torch.device("cpu")
# The CPU statistics plans the agreement tests run on: fused (one chunk per tensor), fused with
# 40-byte chunks (every sum and distribution spans chunks), and per-layer (chunk_bytes=0).
EXACT_PLANS: dict[str, StatsPlan] = {
    "fused": choose_plan(CPU, exact_every=1),
    "fused-40B": choose_plan(CPU, chunk_bytes=40, exact_every=1),
    "per-layer": choose_plan(CPU, chunk_bytes=0, exact_every=1),
}


def _monitor(opt: torch.optim.Optimizer, plan: StatsPlan, **kw: Any) -> Monitor:
    """A Monitor on `plan`; fails when the knobs would have chosen another plan."""
    mon = Monitor(
        opt,
        exact_every=plan.exact_every,
        sample_size=plan.sample_size,
        chunk_bytes=plan.chunk_bytes,
        kernel=plan.kernel,
        **kw,
    )
    assert mon.stats_plan == plan
    return mon


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits, so that NaN payloads compare too (fp16 centered runs can reach NaN)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.detach().view(ints[t.element_size()])


def _opt(model: torch.nn.Module, variant: str, **extra: Any) -> torch.optim.RMSprop:
    kw = dict(VARIANTS[variant]) | extra
    if isinstance(kw.get("lr"), torch.Tensor):
        kw["lr"] = kw["lr"].clone()
    kw.setdefault("lr", 1e-2)
    params = list(model.parameters())
    # Two groups plus an empty one: per-group lrs and empty groups are always exercised.
    return torch.optim.RMSprop(
        [{"params": params[:3]}, {"params": [], "lr": 0.5}, {"params": params[3:]}], **kw
    )


# Every cadence mode: today's every step and fixed every=N, and budget mode, with a budget that
# fits (full steps where they fit) and one that doesn't (sentinel-only steps, anomalies full).
MODES: dict[str, tuple[dict[str, Any], int]] = {
    "every=1": ({"every": 1}, 4),
    "every=3": ({"every": 3}, 2),
    "budget": ({"every": None}, 4),
    "budget-sentinel": ({"every": None, "overhead": 1e-9}, 4),
}


# Every mode on every variant; the low-precision dtypes on the two modes whose code differs
# there (the full statistics, and the sentinel's float32 norms of float16/bfloat16 gradients).
BIT_CASES = [
    pytest.param(mode, dtype, id=f"{mode}-{str(dtype).removeprefix('torch.')}")
    for mode in sorted(MODES)
    for dtype in DTYPES
    if dtype == torch.float32 or mode in ("every=1", "budget-sentinel")
]


@pytest.mark.parametrize(("mode", "dtype"), BIT_CASES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parameters_are_bit_identical_with_and_without_the_monitor(
    variant: str, dtype: torch.dtype, mode: str
) -> None:
    knobs, n_records = MODES[mode]
    data = batches(4, dtype)
    bare = tiny_model(dtype)
    watched = tiny_model(dtype)
    opt_bare, opt_watched = _opt(bare, variant), _opt(watched, variant)
    train(bare, opt_bare, data)
    mon = Monitor(opt_watched, model=watched, exact_every=2, sample_size=16, **knobs)
    train(watched, opt_watched, data, after_step=lambda i, loss: mon.record_loss(loss))
    mon.close()
    assert len(mon.records) == n_records
    for (name, a), b in zip(bare.named_parameters(), watched.parameters(), strict=True):
        assert torch.equal(_bits(a), _bits(b)), name
    for a, b in zip(opt_bare.state.values(), opt_watched.state.values(), strict=True):
        for key in a:
            assert torch.equal(_bits(a[key]), _bits(b[key])), key


def _close(a: float | None, b: float | None, rel: float, abs_: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _assert_agrees(fast: LayerStats, ref: LayerStats, rel: float, name: str) -> None:
    for field in (
        "grad_norm",
        "param_norm",
        "update_norm",
        "update_ratio",
        "eff_lr_mean",
        "eff_lr_min",
        "eff_lr_p50",
        "eff_lr_p95",
        "eff_lr_max",
    ):
        got, want = getattr(fast, field), getattr(ref, field)
        assert _close(got, want, rel), f"{name}.{field}: fast {got} reference {want}"
    for field in ("nonfinite_grad", "nonfinite_param", "nonfinite_state", "numel", "has_grad"):
        assert getattr(fast, field) == getattr(ref, field), f"{name}.{field}"
    assert (fast.rms_hist is None) == (ref.rms_hist is None)
    if fast.rms_hist is not None and ref.rms_hist is not None:
        assert fast.rms_hist.exact
        assert fast.rms_hist == ref.rms_hist, name


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(
    "variant",
    [
        "plain",
        "momentum",
        "centered",
        "weight_decay",
        "everything",
        "everything-for-loop",
        "tensor-lr",
    ],
)
@pytest.mark.parametrize("plan", list(EXACT_PLANS.values()), ids=list(EXACT_PLANS))
def test_exact_statistics_agree_with_the_float64_reference(
    variant: str, dtype: torch.dtype, plan: StatsPlan
) -> None:
    model = tiny_model(dtype)
    # eps=1e-8 underflows to 0 in float16, so torch's own step divides by zero there; the fast
    # path works in float32 and would (rightly) differ. A representable eps keeps it meaningful.
    low_precision = dtype != torch.float32
    opt = _opt(model, variant, eps=2e-3) if low_precision else _opt(model, variant)
    mon = _monitor(opt, plan, model=model)
    refs: list[dict[str, LayerStats]] = []
    frozen = model[0].bias  # a parameter without a gradient from step 2 on

    def after_backward(i: int) -> None:
        if i >= 1:
            frozen.grad = None

    def after_step(i: int, loss: torch.Tensor) -> None:
        by_param = {p: g for g in opt.param_groups for p in g["params"]}
        refs.append(
            {
                name: reference.layer_stats(p, opt.state.get(p, {}), by_param[p], grad=p.grad)
                for name, p in model.named_parameters()
            }
        )

    train(model, opt, batches(3, dtype), after_backward=after_backward, after_step=after_step)
    mon.close()
    # Low-precision parameters: the fast path works in float32, the reference in float64.
    rel = 1e-5 if dtype == torch.float32 else 2e-3
    for record, ref in zip(mon.records, refs, strict=True):
        for name, stats in record.layers.items():
            _assert_agrees(stats, ref[name], rel, f"step{record.step}.{name}")
        assert record.grad_norm == pytest.approx(
            math.sqrt(sum(r.grad_norm**2 for r in ref.values())), rel=rel
        )
    assert mon.records[-1].layers["0.bias"].has_grad is False
    assert mon.records[-1].layers["0.bias"].update_norm == 0.0


@pytest.mark.parametrize("variant", ["plain", "centered", "weight_decay"])
def test_compiled_kernel_agrees_with_the_float64_reference(variant: str) -> None:
    """The opt-in torch.compile'd norm pass (float32), against the same reference."""
    model = tiny_model()
    opt = _opt(model, variant)
    mon = _monitor(opt, choose_plan(CPU, kernel="compiled", exact_every=1), model=model)
    refs: list[dict[str, LayerStats]] = []

    def after_step(i: int, loss: torch.Tensor) -> None:
        by_param = {p: g for g in opt.param_groups for p in g["params"]}
        refs.append(
            {
                name: reference.layer_stats(p, opt.state.get(p, {}), by_param[p], grad=p.grad)
                for name, p in model.named_parameters()
            }
        )

    train(model, opt, batches(2), after_step=after_step)
    mon.close()
    assert mon.stats_plan.kernel == "compiled"  # it compiled and ran, no eager fallback
    for record, ref in zip(mon.records, refs, strict=True):
        for name, stats in record.layers.items():
            _assert_agrees(stats, ref[name], 1e-5, f"step{record.step}.{name}")


def test_an_unknown_kernel_is_refused_with_the_accepted_values() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters())
    with pytest.raises(ValueError, match="kernel='fast'.*eager, compiled"):
        Monitor(opt, model=model, kernel="fast")


@pytest.mark.parametrize(
    "variant",
    [
        "plain",
        "momentum",
        "centered",
        "weight_decay",
        "maximize",
        "everything",
        "everything-for-loop",
    ],
)
@pytest.mark.parametrize("path", ["per-layer", "fused-exact", "fused-sampled", "compiled"])
def test_derived_update_norm_equals_the_change_the_step_made(variant: str, path: str) -> None:
    # per-layer: full-tensor temporaries; fused-*: 40-byte scratch, so each sum spans chunks.
    plan = {
        "per-layer": choose_plan(CPU, chunk_bytes=0, exact_every=1),
        "fused-exact": choose_plan(CPU, chunk_bytes=40, exact_every=1),
        "fused-sampled": choose_plan(CPU, chunk_bytes=40, sample_size=1),
        "compiled": choose_plan(CPU, kernel="compiled", sample_size=1),
    }[path]
    torch.set_default_dtype(torch.float64)
    try:
        model = tiny_model(torch.float64)
    finally:
        torch.set_default_dtype(torch.float32)
    opt = _opt(model, variant)
    mon = _monitor(opt, plan, model=model)
    before: list[dict[str, torch.Tensor]] = []
    actual: list[dict[str, float]] = []

    def snapshot(i: int) -> None:  # the test may copy parameters; the monitor never does
        before.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def measure(i: int, loss: torch.Tensor) -> None:
        actual.append(
            {n: float((p.detach() - before[i][n]).norm()) for n, p in model.named_parameters()}
        )

    train(model, opt, batches(4, torch.float64), after_backward=snapshot, after_step=measure)
    mon.close()
    if path == "per-layer":
        assert "fused" not in mon.layer_paths.values()
    elif path == "compiled":
        assert mon.stats_plan.kernel == "compiled"  # it compiled and ran, no eager fallback
    elif "momentum" not in VARIANTS[variant]:
        assert "fused" in mon.layer_paths.values()  # the update norm went through the fused pass
    for record, real in zip(mon.records, actual, strict=True):
        for name, stats in record.layers.items():
            assert stats.update_norm == pytest.approx(real[name], rel=1e-9, abs=1e-15), name


def test_sampled_steps_estimate_from_the_fixed_sample_and_keep_totals() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2, centered=True)
    mon = Monitor(opt, model=model, exact_every=3, sample_size=20)
    samples = {slot.name: slot.sample for slot in mon._engine.slots}
    states: list[dict[str, dict[str, torch.Tensor]]] = []
    train(
        model,
        opt,
        batches(3),
        after_step=lambda i, loss: states.append(
            {
                n: {k: v.clone() for k, v in opt.state[p].items()}
                for n, p in model.named_parameters()
            }
        ),
    )
    mon.close()
    exact, sampled, _ = mon.records
    big = "2.weight"  # 144 elements > sample_size
    assert samples[big] is not None and samples["0.bias"] is None
    assert exact.layers[big].rms_hist.exact and not sampled.layers[big].rms_hist.exact
    assert sampled.layers["0.bias"].rms_hist.exact  # small tensors are always exact
    hist = sampled.layers[big].rms_hist
    assert hist.total == 144
    idx = samples[big]
    state = states[1][big]
    sub = {k: v.reshape(-1)[idx] for k, v in state.items() if v.dim() > 0}
    eff = [0.01 / d for d in reference.denominators(sub, {"eps": 1e-8, "centered": True})]
    stats = sampled.layers[big]
    assert stats.eff_lr_p50 == pytest.approx(reference.lower_quantile(eff, 0.5), rel=1e-5)
    assert stats.eff_lr_p95 == pytest.approx(reference.lower_quantile(eff, 0.95), rel=1e-5)
    assert stats.eff_lr_max == pytest.approx(max(eff), rel=1e-5)
    ref_hist = reference.histogram(sub["square_avg"].sqrt().tolist())
    nonzero = [i for i, c in enumerate(ref_hist.counts) if c]
    assert [i for i, c in enumerate(hist.counts) if c] == nonzero


def test_nan_and_inf_in_one_layers_gradient_are_counted_in_that_layer_only() -> None:
    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    mon = Monitor(opt, model=model)
    target = model[2].weight

    def poison(i: int) -> None:
        if i == 1:
            assert target.grad is not None
            target.grad[0, 0] = float("nan")
            target.grad[3, 4] = float("inf")
            target.grad[5, 5] = float("-inf")

    train(model, opt, batches(2), after_backward=poison)
    mon.close()
    clean, poisoned = mon.records
    assert clean.nonfinite == {"grad": 0, "param": 0, "state": 0, "loss": 0}
    assert poisoned.layers["2.weight"].nonfinite_grad == 3
    assert poisoned.nonfinite["grad"] == 3
    for name, stats in poisoned.layers.items():
        if name != "2.weight":
            assert (stats.nonfinite_grad, stats.nonfinite_param, stats.nonfinite_state) == (0, 0, 0)
    # The step then spreads them into that layer's state and parameters: counted there too.
    poisoned_layer = poisoned.layers["2.weight"]
    assert poisoned_layer.nonfinite_state > 0 and poisoned_layer.nonfinite_param > 0
    assert poisoned_layer.rms_hist is not None and poisoned_layer.rms_hist.nonfinite > 0
    assert poisoned_layer.rms_hist.total == poisoned_layer.numel
    assert not poisoned.finite
    # a NaN norm has no update ratio: NaN, never an Inf that reads as "a huge update"
    assert math.isnan(poisoned_layer.update_ratio) and math.isnan(poisoned.update_ratio)


def test_sparse_gradients_are_counted_and_torch_raises_its_own_error() -> None:
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = torch.optim.RMSprop(emb.parameters(), lr=1e-2)
    mon = Monitor(opt, model=emb)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    assert mon.sparse_grads == 1 and mon.step == 0
    # The engine itself reads sparse gradients without failing (other optimizers accept them).
    packed = mon._engine.compute(exact=True)
    assert packed.layers[0].sparse_grad
    mon.close()


def test_a_parameter_that_never_had_a_gradient_has_no_distribution() -> None:
    model = tiny_model()
    model[4].bias.requires_grad_(False)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    mon = Monitor(opt, model=model)
    train(model, opt, batches(1))
    mon.close()
    stats = mon.records[0].layers["4.bias"]
    assert not stats.has_grad and stats.rms_hist is None and stats.eff_lr_mean is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_chunked_exact_distribution_equals_the_sorting_path_at_bucket_edges(
    dtype: torch.dtype,
) -> None:
    """The fused path buckets by log10 (corrected against the edges) and selects quantiles by
    radix select; at and next to every edge, on zeros and on ties it must equal bucketize/kthvalue.
    """
    edges = torch.tensor(RMS_EDGES, dtype=dtype)
    rms = torch.cat(
        [
            edges,
            torch.nextafter(edges, torch.zeros_like(edges)),
            torch.nextafter(edges, torch.full_like(edges, math.inf)),
            torch.zeros(7, dtype=dtype),
            torch.full((300,), 3e-4, dtype=dtype),  # ties straddling the quantile positions
            torch.tensor([1e-12, 5e-11, 1e3, 7e5], dtype=dtype),
            # more than 2**16 values, so quantiles go through the radix select
            torch.rand(70000, generator=torch.Generator().manual_seed(3), dtype=dtype).mul_(1e-2),
        ]
    )
    param = torch.nn.Parameter(torch.zeros(rms.numel(), dtype=dtype))
    opt = torch.optim.RMSprop([param], lr=1e-3)
    param.grad = torch.ones_like(param)
    opt.step()
    opt.state[param]["square_avg"].copy_(rms * rms)
    stats = {}
    paths = {}
    for label, chunk_bytes in (("fused", 1024), ("per-layer", 0)):
        mon = _monitor(opt, choose_plan(CPU, chunk_bytes=chunk_bytes, exact_every=1))
        packed = mon._engine.compute(exact=True)
        layers, _, _ = decode(packed, packed.buffer.tolist(), RMS_EDGES)
        stats[label] = layers["group0.param0"]
        paths[label] = packed.layers[0].path
        mon.close()
    assert paths == {"fused": "fused", "per-layer": "per-layer"}  # each took its own path
    fused, plain = stats["fused"], stats["per-layer"]
    assert fused.rms_hist == plain.rms_hist and fused.rms_hist is not None
    assert fused.rms_hist.zeros == 7 and fused.rms_hist.total == rms.numel()
    for field in ("eff_lr_min", "eff_lr_p50", "eff_lr_p95", "eff_lr_max"):
        assert getattr(fused, field) == getattr(plain, field), field
    assert fused.eff_lr_mean == pytest.approx(plain.eff_lr_mean, rel=1e-6)


def test_weighted_global_quantiles_without_a_sort_equal_the_reference() -> None:
    gen = torch.Generator().manual_seed(5)
    vals = torch.cat(
        [
            torch.rand(4000, generator=gen, dtype=torch.float64).mul_(1e-3),
            torch.full((500,), 2e-4, dtype=torch.float64),  # ties across the quantile positions
            torch.zeros(20, dtype=torch.float64),
            torch.tensor([5.0, 7e3], dtype=torch.float64),
        ]
    )
    weights = torch.cat([torch.full((4000,), 256.0), torch.full((500,), 2.5), torch.ones(22)]).to(
        torch.float64
    )
    got = weighted_lower_quantiles(vals, weights, (0.0, 0.5, 0.95, 1.0))
    assert got is not None
    want = [
        reference.weighted_lower_quantile(vals.tolist(), weights.tolist(), q)
        for q in (0.0, 0.5, 0.95, 1.0)
    ]
    assert got == want
    nan = torch.tensor([1.0, math.nan], dtype=torch.float64)
    assert weighted_lower_quantiles(nan, torch.ones(2, dtype=torch.float64), (0.5,)) is None
