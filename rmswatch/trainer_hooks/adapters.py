"""Per-optimizer adapters: where the second-moment state lives and how the update is derived.

An adapter tells the statistics code three things about one optimizer family: the state key
whose square root is the RMS (`square_avg` for RMSprop), torch's own denominator for a
parameter, and the update the step just applied, derived from post-step state so that no copy
of the parameters is ever kept. Adam/AdamW/Adagrad slot in by adding an adapter to `ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch


def _lr_of(group: Mapping[str, Any]) -> float | torch.Tensor:
    lr = group["lr"]
    return lr if isinstance(lr, torch.Tensor) else float(lr)


@dataclass(frozen=True)
class RMSpropAdapter:
    """torch.optim.RMSprop in every variant (momentum, centered, weight_decay, maximize)."""

    name: str = "RMSprop"
    rms_state: str = "square_avg"
    state_keys: tuple[str, ...] = ("square_avg", "momentum_buffer", "grad_avg")
    hyperparameters: tuple[str, ...] = (
        "lr",
        "alpha",
        "eps",
        "weight_decay",
        "momentum",
        "centered",
        "maximize",
        "foreach",
        "capturable",
        "differentiable",
    )

    def variance(self, state: Mapping[str, Any], group: Mapping[str, Any]) -> torch.Tensor:
        """v in torch's denominator: square_avg, or square_avg - grad_avg**2 when centered.

        Computed with the same op sequence as torch so that, in the parameter's dtype, the
        denominator is bit-identical to the one the step used.
        """
        square_avg: torch.Tensor = state["square_avg"]
        if group.get("centered", False):
            grad_avg: torch.Tensor = state["grad_avg"]
            return square_avg.addcmul(grad_avg, grad_avg, value=-1)
        return square_avg

    def denominator(self, state: Mapping[str, Any], group: Mapping[str, Any]) -> torch.Tensor:
        """sqrt(v) + eps, a fresh tensor (never a view of optimizer state)."""
        v = self.variance(state, group)
        d = v.sqrt_() if v is not state["square_avg"] else v.sqrt()
        return d.add_(group["eps"])

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        state: Mapping[str, Any],
        group: Mapping[str, Any],
        denominator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The change this step made to `param`, from post-step state only.

        momentum > 0:  u = -lr * momentum_buffer
        otherwise:     u = -lr * g / d,                       g = -grad if maximize else grad
        weight decay:  u = -lr * (g + wd * p_after) / (d - lr * wd)
        The weight-decay form solves u = -lr * (g + wd * p_before) / d with p_before = p_after - u.
        """
        lr = _lr_of(group)
        if group.get("momentum", 0) > 0:
            buf: torch.Tensor = state["momentum_buffer"]
            return buf * (-lr)
        d = self.denominator(state, group) if denominator is None else denominator
        g = -grad if group.get("maximize", False) else grad
        wd = group.get("weight_decay", 0)
        u: torch.Tensor
        if wd != 0:
            u = (g + param * wd).mul_(-lr).div_(d - lr * wd)
        else:
            u = (g * (-lr)).div_(d)
        return u

    def fused_sums_chunked(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        state: Mapping[str, Any],
        group: Mapping[str, Any],
        scratch: tuple[torch.Tensor, torch.Tensor],
    ) -> dict[str, list[torch.Tensor]]:
        """One cache-resident pass over grad, square_avg (grad_avg; param under weight decay).

        Returns per-chunk 0-d partial sums: "grad_sq", "update_sq" (||u||^2 / lr^2),
        "den_sum" and, under weight decay, "param_sq". Each element of each tensor is read from
        memory once; the temporaries live in the two `scratch` buffers. ||u|| uses the same
        formulas as `update`. The denominator sum is finite iff square_avg (and grad_avg) are
        finite, since sqrt turns NaN, +Inf and -Inf into NaN/Inf (an overflowing sum only
        triggers an exact count, which is right anyway). Only for momentum == 0.
        """
        lr = _lr_of(group)
        eps = group["eps"]
        wd = group.get("weight_decay", 0)
        sign = -1.0 if group.get("maximize", False) else 1.0
        centered = group.get("centered", False)
        sq = state["square_avg"].reshape(-1)
        ga_flat = state["grad_avg"].reshape(-1) if centered else None
        g_flat, p_flat = grad.reshape(-1), param.reshape(-1)
        size = scratch[0].numel()
        n = g_flat.numel()
        gsq: list[torch.Tensor] = []
        usq: list[torch.Tensor] = []
        dsum: list[torch.Tensor] = []
        psq: list[torch.Tensor] = []
        for start in range(0, n, size):
            stop = min(start + size, n)
            d, num = scratch[0][: stop - start], scratch[1][: stop - start]
            v = sq[start:stop]
            if ga_flat is not None:
                ga = ga_flat[start:stop]
                torch.addcmul(v, ga, ga, value=-1, out=d)
                d.sqrt_()
            else:
                torch.sqrt(v, out=d)
            d.add_(eps)
            dsum.append(d.sum())
            g = g_flat[start:stop]
            gsq.append(torch.dot(g, g))
            if wd != 0:
                # |u| = lr |g_s + wd p| / (d - lr wd); the sign of g_s only matters against p.
                pc = p_flat[start:stop]
                psq.append(torch.dot(pc, pc))
                torch.add(g, pc, alpha=wd * sign, out=num)
                d.sub_(lr * wd)
                num.div_(d)
            else:
                torch.div(g, d, out=num)
            usq.append(torch.dot(num, num))
        parts = {"grad_sq": gsq, "update_sq": usq, "den_sum": dsum}
        if psq:
            parts["param_sq"] = psq
        return parts


Adapter = RMSpropAdapter

ADAPTERS: dict[type[torch.optim.Optimizer], Adapter] = {torch.optim.RMSprop: RMSpropAdapter()}


def adapter_for(optimizer: object) -> Adapter:
    """The adapter for `optimizer`, or TypeError naming its class and what is supported."""
    for cls in type(optimizer).__mro__:
        if cls in ADAPTERS:
            return ADAPTERS[cls]
    supported = ", ".join(sorted(f"torch.optim.{c.__name__}" for c in ADAPTERS))
    raise TypeError(
        f"rmswatch cannot read {type(optimizer).__module__}.{type(optimizer).__qualname__}: "
        f"it needs an optimizer with RMS (square_avg) state; supported: {supported}"
    )


def _rmsprop_sums(
    g: torch.Tensor,
    v: torch.Tensor,
    ga: torch.Tensor | None,
    p: torch.Tensor,
    eps: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    decay: bool,
) -> torch.Tensor:
    """[|g|^2, |u|^2 / lr^2, sum(denominator), |p|^2] in one loop (the body `torch.compile`
    fuses); a = wd * sign and b = lr * wd, as in `fused_sums_chunked`."""
    d = (v.addcmul(ga, ga, value=-1) if ga is not None else v).sqrt() + eps
    num = (g + a * p) / (d - b) if decay else g / d
    return torch.stack([(g * g).sum(), (num * num).sum(), d.sum(), (p * p).sum()])


_compiled_sums: Any = None


def compiled_sums(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: Mapping[str, Any],
    group: Mapping[str, Any],
) -> dict[str, list[torch.Tensor]]:
    """`fused_sums_chunked`'s sums from one `torch.compile`d (Inductor) kernel per layer.

    Compiled on first use (seconds to tens of seconds; cached by Inductor on disk), one graph
    per (centered, weight decay) combination and dtype; shapes are dynamic, hyperparameters
    are passed as 0-d tensors so that changing them never recompiles.
    """
    global _compiled_sums
    if _compiled_sums is None:
        _compiled_sums = torch.compile(_rmsprop_sums, dynamic=True)
    lr = float(_lr_of(group))
    wd = float(group.get("weight_decay", 0))
    sign = -1.0 if group.get("maximize", False) else 1.0
    dtype = param.dtype
    ga = state["grad_avg"].reshape(-1) if group.get("centered", False) else None
    out = _compiled_sums(
        grad.reshape(-1),
        state["square_avg"].reshape(-1),
        ga,
        param.reshape(-1),
        torch.tensor(float(group["eps"]), dtype=dtype),
        torch.tensor(wd * sign, dtype=dtype),
        torch.tensor(lr * wd, dtype=dtype),
        wd != 0,
    )
    return {
        "grad_sq": [out[0]],
        "update_sq": [out[1]],
        "den_sum": [out[2]],
        "param_sq": [out[3]],
    }
