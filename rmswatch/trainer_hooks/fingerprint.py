"""Optimizer-state fingerprints: per-layer RMS-state norms and exact checksums of state and params.

One definition serves the checkpoint manifest (is the resumed state the saved one?) and the
cross-rank desync check (do all ranks hold the same state?). Checksums are integer sums of the
tensors' bit patterns: integer addition is associative, so the result is exact and independent
of reduction order, thread count and device; any changed bit (almost surely) changes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rmswatch.trainer_hooks.adapters import adapter_for

# Second-moment state keys of optimizers without an adapter (Adam/AdamW, Adagrad), so that a
# checkpoint of any of them still gets a fingerprint.
_FALLBACK_RMS_KEYS: tuple[str, ...] = ("square_avg", "exp_avg_sq", "sum")
_INT_VIEW: dict[int, torch.dtype] = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class LayerFingerprint:
    """One parameter's fingerprint; the `square_avg_*` fields are None before its first step."""

    name: str
    square_avg_norm: float | None
    square_avg_checksum: int | None
    param_checksum: int


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Per-layer fingerprints in the optimizer's parameter order."""

    layers: tuple[LayerFingerprint, ...]

    @property
    def param_checksum(self) -> int:
        """All parameters' checksums combined (a sum modulo 2**64)."""
        return sum(layer.param_checksum for layer in self.layers) & _MASK64

    def mismatches(self, other: Fingerprint) -> list[str]:
        """Layer names (with what differs) where `other` is not bit-identical to this one."""
        if [lay.name for lay in self.layers] != [lay.name for lay in other.layers]:
            return ["parameter list differs"]
        out = []
        for mine, theirs in zip(self.layers, other.layers, strict=True):
            parts = []
            if mine.square_avg_checksum != theirs.square_avg_checksum:
                parts.append(
                    f"square_avg norm {_fmt(mine.square_avg_norm)} vs "
                    f"{_fmt(theirs.square_avg_norm)}"
                )
            if mine.param_checksum != theirs.param_checksum:
                parts.append("parameters differ")
            if parts:
                out.append(f"{mine.name} ({'; '.join(parts)})")
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "name": lay.name,
                "square_avg_norm": lay.square_avg_norm,
                "square_avg_checksum": lay.square_avg_checksum,
                "param_checksum": lay.param_checksum,
            }
            for lay in self.layers
        ]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> Fingerprint:
        return cls(
            tuple(
                LayerFingerprint(
                    str(item["name"]),
                    None if item["square_avg_norm"] is None else float(item["square_avg_norm"]),
                    None
                    if item["square_avg_checksum"] is None
                    else int(item["square_avg_checksum"]),
                    int(item["param_checksum"]),
                )
                for item in data
            )
        )


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.9g}"


def bitsum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of the tensor's bit patterns as signed integers: a 0-d int64 on its device.

    Wraps modulo 2**64 on overflow, the same on every device; no host synchronisation.
    """
    flat = tensor.detach().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    view = flat.view(_INT_VIEW[flat.element_size()]) if flat.is_floating_point() else flat
    return torch.sum(view, dtype=torch.int64)


def checksum(tensor: torch.Tensor) -> int:
    """`bitsum` as a Python int in [0, 2**64): exact, independent of reduction order."""
    return int(bitsum(tensor)) & _MASK64


def rms_state_key(optimizer: torch.optim.Optimizer) -> str | None:
    """The state key holding the second moment (`square_avg` for RMSprop), if there is one."""
    try:
        return adapter_for(optimizer).rms_state
    except TypeError:
        for state in optimizer.state.values():
            for key in _FALLBACK_RMS_KEYS:
                if key in state:
                    return key
        return None


def parameter_names(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module | None
) -> list[tuple[str, torch.Tensor]]:
    """(name, parameter) in the optimizer's order; names from `model` where it has them."""
    names: dict[int, str] = {}
    if model is not None:
        names = {id(p): n for n, p in model.named_parameters()}
    return [
        (names.get(id(p), f"group{gi}.param{pi}"), p)
        for gi, group in enumerate(optimizer.param_groups)
        for pi, p in enumerate(group["params"])
    ]


def optimizer_fingerprint(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module | None = None
) -> Fingerprint:
    """The fingerprint of `optimizer`'s RMS state and parameters, now (reads device values)."""
    key = rms_state_key(optimizer)
    layers = []
    with torch.no_grad():
        for name, param in parameter_names(optimizer, model):
            state = optimizer.state.get(param, {})
            square_avg = state.get(key) if key is not None else None
            if isinstance(square_avg, torch.Tensor):
                norm: float | None = float(
                    torch.linalg.vector_norm(square_avg.detach(), dtype=torch.float64)
                )
                sq_sum: int | None = checksum(square_avg)
            else:
                norm, sq_sum = None, None
            layers.append(LayerFingerprint(name, norm, sq_sum, checksum(param)))
    return Fingerprint(tuple(layers))
