"""One step's statistics as one float64 buffer: what goes in (`Packer`), where it lands
(`Packed`, `LayerLayout`) and how the host copy turns back into `LayerStats` (`decode`).

One buffer means one device->host transfer per step, whatever the number of layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rmswatch.trainer_hooks.records import Histogram, LayerStats, update_ratio

Ref = tuple[str, int]
"""Where one value sits: ("s", i) a packed scalar, ("c", i) a host constant, ("v", i) a vector."""

_NAN = float("nan")


@dataclass
class Slot:
    """One parameter tensor as the statistics see it."""

    name: str
    param: torch.Tensor
    group: int
    numel: int
    # Fixed sample positions (sorted, drawn once); None when the whole tensor is small enough.
    sample: torch.Tensor | None = None


@dataclass
class Packer:
    """Collects 0-d tensors and vectors (or host floats) and remembers where each one lands."""

    scalars: list[torch.Tensor] = field(default_factory=list)
    vectors: list[torch.Tensor] = field(default_factory=list)
    vector_sizes: list[int] = field(default_factory=list)
    consts: list[float] = field(default_factory=list)

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def scalar(self, value: torch.Tensor | float) -> Ref:
        if isinstance(value, torch.Tensor) and value.device != self.device:
            # e.g. a CPU lr tensor while the parameters live on CUDA: reading it costs nothing.
            value = float(value.detach().cpu()) if value.device.type == "cpu" else value
        if isinstance(value, torch.Tensor):
            self.scalars.append(value.reshape(()))
            return ("s", len(self.scalars) - 1)
        self.consts.append(float(value))
        return ("c", len(self.consts) - 1)

    def vector(self, value: torch.Tensor) -> Ref:
        self.vectors.append(value.reshape(-1))
        self.vector_sizes.append(int(value.numel()))
        return ("v", len(self.vectors) - 1)

    def sum_refs(self, refs: list[Ref]) -> Ref:
        """One scalar holding the sum of scalars already packed (host-side when all are)."""
        if all(kind == "c" for kind, _ in refs):
            return self.scalar(sum(self.consts[i] for _, i in refs))
        total: torch.Tensor | float = 0.0
        for kind, i in refs:
            total = total + (self.consts[i] if kind == "c" else self.scalars[i])
        return self.scalar(total)

    def pack(self, device: torch.device) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if self.scalars:
            by_dtype: dict[torch.dtype, list[int]] = {}
            for i, s in enumerate(self.scalars):
                by_dtype.setdefault(s.dtype, []).append(i)
            if device.type == "cpu":  # one stack and one conversion per dtype, not per scalar
                out = torch.empty(len(self.scalars), dtype=torch.float64)
                for positions in by_dtype.values():
                    values = torch.stack([self.scalars[i] for i in positions])
                    out.index_copy_(0, torch.tensor(positions), values.to(torch.float64))
                parts.append(out)
            else:
                parts.append(torch.stack([s.to(torch.float64) for s in self.scalars]))
        parts.extend(v.to(torch.float64) for v in self.vectors)
        if not parts:
            return torch.zeros(0, dtype=torch.float64, device=device)
        return torch.cat(parts)


LAYER_PATHS = ("fused", "foreach", "per-layer")
"""How a layer's norms were computed at a step: the CPU fused chunk pass, one `_foreach_norm`
over its tensors (the CPU momentum case), or per-layer ops (CUDA, low precision, odd layouts)."""


@dataclass
class LayerLayout:
    name: str
    group: int
    numel: int
    has_grad: bool
    sparse_grad: bool
    exact: bool
    fields: dict[str, Ref]
    path: str = "per-layer"


@dataclass
class Packed:
    """A step's statistics on the device, and how to read them back."""

    buffer: torch.Tensor
    packer: Packer
    layers: list[LayerLayout]
    lrs: list[Ref]
    global_fields: dict[str, Ref]

    def reader(self, values: Sequence[float]) -> Reader:
        return Reader(self.packer, values)


class Reader:
    """Reads packed values back from the host copy of a `Packed.buffer`."""

    def __init__(self, packer: Packer, values: Sequence[float]) -> None:
        self._consts = packer.consts
        self._values = values
        self._n_scalars = len(packer.scalars)
        self._vector_offsets: list[int] = []
        offset = self._n_scalars
        for size in packer.vector_sizes:
            self._vector_offsets.append(offset)
            offset += size
        self._vector_sizes = packer.vector_sizes

    def get(self, ref: Ref) -> float:
        kind, index = ref
        if kind == "c":
            return self._consts[index]
        if kind == "s":
            return float(self._values[index])
        raise ValueError(f"{ref} is a vector")

    def vec(self, ref: Ref) -> list[float]:
        _, index = ref
        start = self._vector_offsets[index]
        return [float(x) for x in self._values[start : start + self._vector_sizes[index]]]


def decode(
    packed: Packed, values: Sequence[float], edges: tuple[float, ...]
) -> tuple[dict[str, LayerStats], dict[str, float], list[float]]:
    """Host-side: per-layer `LayerStats`, global quantiles and per-group lrs."""
    r = packed.reader(values)
    layers: dict[str, LayerStats] = {}
    for lay in packed.layers:
        f = lay.fields
        param_norm = _sqrt(r.get(f["param_sq"]))
        update_norm = _sqrt(r.get(f["update_sq"]))
        hist: Histogram | None = None
        if "hist" in f:
            buckets = [int(round(x)) for x in r.vec(f["hist"])]
            hist = Histogram(
                edges=edges,
                counts=tuple(buckets[:-2]),
                zeros=buckets[-2],
                nonfinite=buckets[-1],
                exact=lay.exact,
            )

        def opt(key: str, fields: dict[str, Ref] = f) -> float | None:
            return r.get(fields[key]) if key in fields else None

        layers[lay.name] = LayerStats(
            grad_norm=_sqrt(r.get(f["grad_sq"])),
            param_norm=param_norm,
            update_norm=update_norm,
            update_ratio=update_ratio(update_norm, param_norm),
            nonfinite_grad=int(r.get(f["nf_grad"])),
            nonfinite_param=int(r.get(f["nf_param"])),
            nonfinite_state=int(r.get(f["nf_state"])),
            eff_lr_mean=opt("eff_lr_mean"),
            eff_lr_min=opt("eff_lr_min"),
            eff_lr_p50=opt("eff_lr_p50"),
            eff_lr_p95=opt("eff_lr_p95"),
            eff_lr_max=opt("eff_lr_max"),
            rms_hist=hist,
            group=lay.group,
            numel=lay.numel,
            has_grad=lay.has_grad,
            sparse_grad=lay.sparse_grad,
        )
    global_q = {k: r.get(ref) for k, ref in packed.global_fields.items()}
    lrs = [r.get(ref) for ref in packed.lrs]
    return layers, global_q, lrs


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else _NAN
