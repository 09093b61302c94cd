"""Fast per-step statistics: computed on the parameters' device, packed into one float64 buffer.

`StatsEngine.compute()` runs in the optimizer's post-step hook and returns a `Packed` (a flat
tensor plus the host-side layout needed to read it); `decode()` turns the host copy of that
tensor into `LayerStats`. The path (CPU: synchronous, count non-finite values only where a norm
is non-finite; CUDA: no host reads at all) is chosen once, at construction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rmswatch.trainer_hooks.adapters import Adapter, compiled_sums
from rmswatch.trainer_hooks.records import RMS_EDGES, Histogram, LayerStats

QUANTILES = (0.5, 0.95)
KERNELS = ("eager", "compiled")
log = logging.getLogger(__name__)
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

    def scalar(self, value: torch.Tensor | float) -> tuple[str, int]:
        if isinstance(value, torch.Tensor) and value.device != self.device:
            # e.g. a CPU lr tensor while the parameters live on CUDA: reading it costs nothing.
            value = float(value.detach().cpu()) if value.device.type == "cpu" else value
        if isinstance(value, torch.Tensor):
            self.scalars.append(value.reshape(()))
            return ("s", len(self.scalars) - 1)
        self.consts.append(float(value))
        return ("c", len(self.consts) - 1)

    def vector(self, value: torch.Tensor) -> tuple[str, int]:
        self.vectors.append(value.reshape(-1))
        self.vector_sizes.append(int(value.numel()))
        return ("v", len(self.vectors) - 1)

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


@dataclass
class LayerLayout:
    name: str
    group: int
    numel: int
    has_grad: bool
    sparse_grad: bool
    exact: bool
    fields: dict[str, tuple[str, int]]


@dataclass
class Packed:
    """A step's statistics on the device, and how to read them back."""

    buffer: torch.Tensor
    packer: Packer
    layers: list[LayerLayout]
    lrs: list[tuple[str, int]]
    global_fields: dict[str, tuple[str, int]]

    def reader(self, values: Sequence[float]) -> _Reader:
        return _Reader(self.packer, values)


class _Reader:
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

    def get(self, ref: tuple[str, int]) -> float:
        kind, index = ref
        if kind == "c":
            return self._consts[index]
        if kind == "s":
            return float(self._values[index])
        raise ValueError(f"{ref} is a vector")

    def vec(self, ref: tuple[str, int]) -> list[float]:
        _, index = ref
        start = self._vector_offsets[index]
        return [float(x) for x in self._values[start : start + self._vector_sizes[index]]]


def weighted_lower_quantiles(
    vals: torch.Tensor, weights: torch.Tensor, qs: Sequence[float]
) -> list[float] | None:
    """Weighted 'lower' quantiles of float64 values (CPU, host reads), without a full sort.

    For each q: the smallest value whose cumulative weight (values in ascending order)
    reaches q * total. Non-negative floats order like their bit patterns, so a weighted count
    of the top 15 bits finds the bin holding each answer, and only that bin is sorted. None when
    some value is negative or not finite (the caller sorts instead).
    """
    if vals.numel() == 0:
        return None
    lo, hi = torch.aminmax(vals)
    if not (float(lo) >= 0 and math.isfinite(float(hi))):
        return None
    nbins = 1 << 15
    top = vals.view(torch.int64).bitwise_right_shift(48).bitwise_and_(nbins - 1)
    cum = torch.bincount(top, weights=weights, minlength=nbins).cumsum(0)
    total = float(cum[-1])
    targets = torch.tensor([q * total for q in qs], dtype=torch.float64)
    bins = torch.searchsorted(cum, targets).clamp_(max=nbins - 1).tolist()
    out: list[float] = []
    for target, b in zip(targets.tolist(), bins, strict=True):
        mask = top == b
        candidates, order = vals[mask].sort()
        if candidates.numel() == 0:  # target beyond the total (rounding): the largest value
            out.append(float(hi))
            continue
        below = float(cum[b - 1]) if b > 0 else 0.0
        ccum = weights[mask][order].cumsum(0).add_(below)
        pos = int(torch.searchsorted(ccum, torch.tensor([target], dtype=torch.float64)))
        out.append(float(candidates[min(pos, candidates.numel() - 1)]))
    return out


def lower_quantile_index(n: int, q: float) -> int:
    """0-based sorted position of the q-quantile with 'lower' interpolation."""
    return int(math.floor(q * (n - 1)))


def _nonfinite_count(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).logical_not_().sum()


class StatsEngine:
    """Computes one step's statistics for every slot; see docs/hooks.md for each formula."""

    def __init__(
        self,
        adapter: Adapter,
        optimizer: torch.optim.Optimizer,
        slots: Sequence[Slot],
        *,
        device: torch.device,
        sample_size: int = 4096,
        sample_seed: int = 0,
        chunk_bytes: int = 1 << 20,
        edges: Sequence[float] = RMS_EDGES,
        kernel: str = "eager",
    ) -> None:
        self.adapter = adapter
        self.optimizer = optimizer
        self.slots = list(slots)
        self.device = device
        # On the CPU reading a norm back is free, so exact non-finite counts run only where a
        # norm is non-finite; on an accelerator that read would stall the stream, so count always.
        self.host_reads = device.type == "cpu"
        self.sample_size = sample_size
        # Chunked passes keep temporaries in cache-sized scratch buffers instead of
        # allocating and writing tensors as large as the parameters (CPU: writes dominate).
        self.chunked = chunk_bytes > 0 and device.type == "cpu"
        self.chunk_bytes = chunk_bytes
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r}: expected one of {', '.join(KERNELS)}")
        # "compiled": the fused norm pass as one torch.compile'd kernel per layer (CPU, opt-in).
        self.kernel = kernel if self.chunked else "eager"
        self._scratch: dict[
            tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]
        ] = {}
        self.edges_list = tuple(float(e) for e in edges)
        self.n_buckets = len(self.edges_list) - 1
        self._edges: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._idx_scratch: torch.Tensor | None = None
        self._ext_edges: dict[tuple[torch.device, torch.dtype, str], torch.Tensor] = {}
        # The edges are log-spaced: bucket j starts at 10**(log_lo + j / per_decade).
        self._log_lo = math.log10(self.edges_list[0])
        span = math.log10(self.edges_list[-1]) - self._log_lo if self.edges_list[0] > 0 else 0.0
        self._per_decade = self.n_buckets / span if span > 0 else 0.0
        self._log_spaced = self._per_decade > 0 and all(
            abs((math.log10(e) - self._log_lo) * self._per_decade - j) < 0.01
            for j, e in enumerate(self.edges_list)
        )
        generator = torch.Generator().manual_seed(sample_seed)
        for slot in self.slots:
            if slot.numel > sample_size:
                idx = torch.randperm(slot.numel, generator=generator)[:sample_size]
                slot.sample = idx.sort().values.to(slot.param.device)

    # -- helpers -------------------------------------------------------------------------------

    def _edges_for(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._edges:
            self._edges[key] = torch.tensor(self.edges_list, dtype=x.dtype, device=x.device)
        return self._edges[key]

    def _bucket_index(self, rms: torch.Tensor) -> torch.Tensor:
        """Bucket of each value: 0..n_buckets-1 over edges, n_buckets zero, n_buckets+1 other."""
        nb = self.n_buckets
        idx = torch.bucketize(rms, self._edges_for(rms), right=True).sub_(1).clamp_(0, nb - 1)
        idx = torch.where(rms == 0, nb, idx)
        return torch.where(torch.isfinite(rms) & (rms >= 0), idx, nb + 1)

    def _bucket_counts(self, rms: torch.Tensor) -> torch.Tensor:
        """Counts over edges, then zeros, then non-finite (n_buckets + 2 entries, float64)."""
        nb = self.n_buckets
        idx = self._bucket_index(rms)
        if self.host_reads:
            return torch.bincount(idx, minlength=nb + 2).to(torch.float64)
        # bincount sizes its output from the data (a host sync on CUDA); index_add_ does not.
        counts = torch.zeros(nb + 2, dtype=torch.float64, device=rms.device)
        return counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def _distribution(
        self, pk: Packer, fields: dict[str, tuple[str, int]], rms: torch.Tensor, eff: torch.Tensor
    ) -> None:
        """eff-LR mean/min/quantiles/max and RMS histogram of the given values (flat, float)."""
        n = eff.numel()
        fields["eff_lr_mean"] = pk.scalar(eff.mean(dtype=torch.float64))
        fields["eff_lr_min"] = pk.scalar(eff.min())
        fields["eff_lr_max"] = pk.scalar(eff.max())
        for q in QUANTILES:
            k = lower_quantile_index(n, q)
            fields[f"eff_lr_p{round(q * 100)}"] = pk.scalar(torch.kthvalue(eff, k + 1).values)
        fields["hist"] = pk.vector(self._bucket_counts(rms))

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def compute(self, *, exact: bool) -> Packed:
        """Statistics of the step that just ran (call from the post-step hook)."""
        opt = self.optimizer
        pk = Packer(device=self.device)
        layers: list[LayerLayout] = []
        global_eff: list[torch.Tensor] = []
        global_w: list[torch.Tensor] = []
        groups = opt.param_groups
        # CPU: the norms and finiteness checks of every plain dense float32/float64 layer in one
        # fused pass and one host read (`_prepass`); the per-layer code handles the rest.
        pre = self._prepass() if self.host_reads else {}
        sampled: dict[torch.dtype, list[tuple[dict[str, tuple[str, int]], int, Any, Any]]] = {}
        for index, slot in enumerate(self.slots):
            group = groups[slot.group]
            p = slot.param
            grad = p.grad
            has_grad = grad is not None
            sparse = bool(grad is not None and grad.is_sparse)
            fields: dict[str, tuple[str, int]] = {}
            layout = LayerLayout(slot.name, slot.group, slot.numel, has_grad, sparse, True, fields)
            layers.append(layout)
            work = torch.float64 if p.dtype == torch.float64 else torch.float32
            state: Mapping[str, Any] = opt.state.get(p, {})
            rms_state = state.get(self.adapter.rms_state)
            has_state = isinstance(rms_state, torch.Tensor)

            denominator: torch.Tensor | None = None
            done = pre.get(index)
            if done is not None:
                for key in ("grad_sq", "nf_grad", "param_sq", "nf_param", "nf_state", "update_sq"):
                    fields[key] = pk.scalar(done[key])
            else:
                denominator = self._layer_norms(pk, fields, slot, group, state, work=work)

            if not has_state or slot.numel == 0:
                continue
            assert isinstance(rms_state, torch.Tensor)
            layout.exact = exact or slot.sample is None
            lr_t = group["lr"]
            if layout.exact:
                if (
                    denominator is None
                    and done is not None
                    and done["nf_state"] == 0
                    and self._distribution_chunkable(slot, state, group)
                    and self._exact_chunked(pk, fields, slot, rms_state, group)
                ):
                    if slot.sample is not None:
                        eff_s = self._sampled_eff(slot.sample, state, group, work)
                        global_eff.append(eff_s)
                        global_w.append(torch.full_like(eff_s, slot.numel / slot.sample.numel()))
                    else:
                        eff = self.adapter.denominator(state, group).to(work).reshape(-1)
                        eff = eff.reciprocal_().mul_(lr_t)
                        global_eff.append(eff)
                        global_w.append(torch.ones_like(eff))
                    continue
                if denominator is None:
                    denominator = self.adapter.denominator(state, group).to(work)
                eff = denominator.reshape(-1).reciprocal().mul_(lr_t)
                rms = rms_state.reshape(-1).to(work).sqrt()
                self._distribution(pk, fields, rms, eff)
                if slot.sample is not None:
                    global_eff.append(eff.index_select(0, slot.sample))
                    global_w.append(
                        torch.full_like(global_eff[-1], slot.numel / slot.sample.numel())
                    )
                else:
                    global_eff.append(eff)
                    global_w.append(torch.ones_like(eff))
            else:
                assert slot.sample is not None
                rms_s = rms_state.reshape(-1).index_select(0, slot.sample).to(work).sqrt()
                eff_s = self._sampled_eff(slot.sample, state, group, work)
                sampled.setdefault(work, []).append((fields, slot.numel, eff_s, rms_s))
                global_eff.append(eff_s)
                global_w.append(torch.full_like(eff_s, slot.numel / slot.sample.numel()))

        for rows in sampled.values():
            self._sampled_distributions(pk, rows)
        global_fields: dict[str, tuple[str, int]] = {}
        if global_eff:
            vals = torch.cat([e.to(torch.float64) for e in global_eff])
            weights = torch.cat([w.to(torch.float64) for w in global_w])
            radix = weighted_lower_quantiles(vals, weights, QUANTILES) if self.host_reads else None
            if radix is not None:
                for q, value in zip(QUANTILES, radix, strict=True):
                    global_fields[f"eff_lr_p{round(q * 100)}"] = pk.scalar(value)
                vals = vals[:0]  # done: skip the sort below
        if global_eff and vals.numel():
            order = torch.argsort(vals)
            cum = weights[order].cumsum(0)
            total = cum[-1]
            for q in QUANTILES:
                # Weighted 'lower' quantile: first value whose cumulative weight reaches q*total.
                pos = torch.searchsorted(cum, total * q).clamp_(max=vals.numel() - 1)
                at = order.index_select(0, pos.reshape(1))  # no host read of `pos`
                global_fields[f"eff_lr_p{round(q * 100)}"] = pk.scalar(vals.index_select(0, at))
        lrs = [pk.scalar(g["lr"]) for g in groups]
        return Packed(pk.pack(self.device), pk, layers, lrs, global_fields)

    def _sampled_eff(
        self, sample: torch.Tensor, state: Mapping[str, Any], group: Mapping[str, Any], work: Any
    ) -> torch.Tensor:
        """lr / denominator at the fixed sample positions (torch's ops, in the param's dtype)."""
        picked = {
            k: v.reshape(-1).index_select(0, sample)
            for k, v in state.items()
            if k in self.adapter.state_keys and isinstance(v, torch.Tensor) and v.dim() > 0
        }
        d_s = self.adapter.denominator(picked, group).to(work)
        return d_s.reciprocal_().mul_(group["lr"])

    def _sampled_distributions(
        self,
        pk: Packer,
        rows: list[tuple[dict[str, tuple[str, int]], int, Any, Any]],
    ) -> None:
        """eff-LR statistics and scaled histograms of every sampled layer, batched: one sort,
        one bucketize and one bincount for all of them (each sample has `sample_size` values)."""
        eff = torch.stack([r[2] for r in rows])
        rms = torch.stack([r[3] for r in rows])
        n_layers, n_s = eff.shape
        means = eff.mean(dim=1, dtype=torch.float64)
        lows, highs = torch.aminmax(eff, dim=1)
        picks = [lower_quantile_index(n_s, q) for q in QUANTILES]
        # Two selections over all rows at once cost less than one sort of them.
        selected = [eff.kthvalue(k + 1, dim=1).values for k in picks]
        nb2 = self.n_buckets + 2
        idx = self._bucket_index(rms).add_(
            torch.arange(n_layers, device=rms.device).mul_(nb2).unsqueeze(1)
        )
        counts = torch.bincount(idx.reshape(-1), minlength=n_layers * nb2)
        counts = counts.reshape(n_layers, nb2).to(torch.float64)
        numels = torch.tensor([float(r[1]) for r in rows], dtype=torch.float64, device=eff.device)
        scaled = self._scale_counts_rows(counts, n_s, numels)
        for i, (fields, _, _, _) in enumerate(rows):
            fields["eff_lr_mean"] = pk.scalar(means[i])
            fields["eff_lr_min"] = pk.scalar(lows[i])
            fields["eff_lr_max"] = pk.scalar(highs[i])
            for q, values in zip(QUANTILES, selected, strict=True):
                fields[f"eff_lr_p{round(q * 100)}"] = pk.scalar(values[i])
            fields["hist"] = pk.vector(scaled[i])

    @staticmethod
    def _scale_counts_rows(
        counts: torch.Tensor, sampled: int, numels: torch.Tensor
    ) -> torch.Tensor:
        """Scale each row of sample counts to its numel with largest-remainder rounding, so every
        row sums to its numel exactly."""
        scaled = counts * (numels / sampled).unsqueeze(1)
        floor = scaled.floor()
        remainder = (numels - floor.sum(dim=1)).round().unsqueeze(1)
        frac = scaled - floor
        order = torch.argsort(frac, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        ranks = torch.arange(order.shape[1], device=order.device)
        rank.scatter_(1, order, ranks.expand_as(order).contiguous())
        return floor + (rank < remainder).to(floor.dtype)

    def _layer_norms(
        self,
        pk: Packer,
        fields: dict[str, tuple[str, int]],
        slot: Slot,
        group: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        work: torch.dtype,
    ) -> torch.Tensor | None:
        """Per-layer norms, counts and update (CUDA, low precision, sparse, odd layouts).

        Returns the full denominator when it had to be built (the distribution reuses it).
        """
        p = slot.param
        grad = p.grad
        sparse = bool(grad is not None and grad.is_sparse)
        # Gradient: norm always; exact non-finite count where the norm says so.
        if grad is None:
            fields["grad_sq"] = pk.scalar(0.0)
            fields["nf_grad"] = pk.scalar(0.0)
        else:
            g_values = grad.coalesce().values() if sparse else grad
            gn = torch.linalg.vector_norm(g_values, dtype=work)
            fields["grad_sq"] = pk.scalar(gn.square())
            fields["nf_grad"] = self._count_if(pk, gn, g_values)
        pn = torch.linalg.vector_norm(p, dtype=work)
        fields["param_sq"] = pk.scalar(pn.square())
        fields["nf_param"] = self._count_if(pk, pn, p)

        has_state = isinstance(state.get(self.adapter.rms_state), torch.Tensor)
        nf_state: list[tuple[str, int]] = []
        state_norms: dict[str, torch.Tensor] = {}
        for key in self.adapter.state_keys:
            t = state.get(key)
            if isinstance(t, torch.Tensor) and t.numel() == slot.numel:
                sn = torch.linalg.vector_norm(t, dtype=work)
                state_norms[key] = sn
                nf_state.append(self._count_if(pk, sn, t))
        fields["nf_state"] = self._sum_refs(pk, nf_state)

        # Update: derived from post-step state (docs/hooks.md), never from a parameter copy.
        if grad is None or sparse or not has_state:
            fields["update_sq"] = pk.scalar(0.0)
        elif group.get("momentum", 0) > 0 and "momentum_buffer" in state_norms:
            lr = group["lr"]
            fields["update_sq"] = pk.scalar(state_norms["momentum_buffer"].square() * lr * lr)
        else:
            # torch's denominator in the parameter's own dtype (bit-identical to the step's),
            # the rest of the update in float32 or better.
            denominator = self.adapter.denominator(state, group).to(work)
            u = self.adapter.update(p.to(work), grad.to(work), state, group, denominator)
            fields["update_sq"] = pk.scalar(torch.linalg.vector_norm(u).square())
            return denominator
        return None

    def _prepass(self) -> dict[int, dict[str, float]]:
        """CPU: norms, update norm and non-finite counts of every fusable layer, read at once.

        A layer is fusable when its gradient is dense and it, its gradient and its state are
        contiguous float32/float64 of one dtype. With momentum, the update norm is lr*|buf| and
        everything is a `torch._foreach_norm` (one call per dtype over all such tensors);
        without, grad, square_avg (and grad_avg, and the parameter under weight decay) go through
        the adapter's fused chunk pass, so each is read from memory once.
        """
        opt = self.optimizer
        groups = opt.param_groups
        to_norm: dict[torch.dtype, list[torch.Tensor]] = {}
        partials: dict[torch.dtype, list[torch.Tensor]] = {}
        plans: list[tuple[int, dict[str, Any]]] = []

        def norm_of(t: torch.Tensor) -> tuple[str, torch.dtype, int, int]:
            lst = to_norm.setdefault(t.dtype, [])
            lst.append(t)
            return ("n", t.dtype, len(lst) - 1, len(lst))

        def sum_of(
            parts: list[torch.Tensor], dtype: torch.dtype
        ) -> tuple[str, torch.dtype, int, int]:
            lst = partials.setdefault(dtype, [])
            lst.extend(parts)
            return ("s", dtype, len(lst) - len(parts), len(lst))

        for index, slot in enumerate(self.slots):
            p = slot.param
            grad = p.grad
            state: Mapping[str, Any] = opt.state.get(p, {})
            if not self._fusable(slot, grad, state):
                continue
            assert grad is not None
            group = groups[slot.group]
            tensors = {
                k: t
                for k in self.adapter.state_keys
                if isinstance(t := state.get(k), torch.Tensor) and t.numel() == slot.numel
            }
            plan: dict[str, Any] = {"state": {}}
            if group.get("momentum", 0) > 0 and "momentum_buffer" in tensors:
                plan["grad"] = norm_of(grad)
                plan["param"] = norm_of(p)
                plan["state"] = {k: norm_of(t) for k, t in tensors.items()}
                plan["update"] = plan["state"]["momentum_buffer"]
            else:
                parts = self._fused_sums(p, grad, state, group)
                plan["grad"] = sum_of(parts["grad_sq"], p.dtype)
                plan["update"] = sum_of(parts["update_sq"], p.dtype)
                covered = {"square_avg", "grad_avg"} if group.get("centered") else {"square_avg"}
                plan["den"] = sum_of(parts["den_sum"], p.dtype)
                plan["state"] = {k: norm_of(t) for k, t in tensors.items() if k not in covered}
                plan["param"] = (
                    sum_of(parts["param_sq"], p.dtype) if "param_sq" in parts else norm_of(p)
                )
            plans.append((index, plan))
        if not plans:
            return {}
        blocks: list[torch.Tensor] = []
        offsets: dict[tuple[str, torch.dtype], int] = {}
        at = 0
        for dtype, lst in to_norm.items():
            offsets[("n", dtype)] = at
            blocks.append(torch.stack(torch._foreach_norm(lst)).to(torch.float64))
            at += len(lst)
        for dtype, lst in partials.items():
            offsets[("s", dtype)] = at
            blocks.append(torch.stack(lst).to(torch.float64))
            at += len(lst)
        values: list[float] = torch.cat(blocks).tolist()

        def squared(ref: tuple[str, torch.dtype, int, int]) -> float:
            kind, dtype, lo, hi = ref
            base = offsets[(kind, dtype)]
            if kind == "n":
                return float(values[base + lo]) ** 2
            return math.fsum(values[base + lo : base + hi])

        out: dict[int, dict[str, float]] = {}
        for index, plan in plans:
            slot = self.slots[index]
            p = slot.param
            grad = p.grad
            assert grad is not None
            state = opt.state[p]
            group = groups[slot.group]
            lr = float(group["lr"])
            grad_sq = squared(plan["grad"])
            param_sq = squared(plan["param"])
            state_ok = all(math.isfinite(squared(r)) for r in plan["state"].values())
            if "den" in plan:
                state_ok = state_ok and math.isfinite(squared(plan["den"]))
            nf_state = 0.0
            if not state_ok:
                nf_state = float(
                    sum(
                        int(_nonfinite_count(t))
                        for k in self.adapter.state_keys
                        if isinstance(t := state.get(k), torch.Tensor) and t.numel() == slot.numel
                    )
                )
            out[index] = {
                "grad_sq": grad_sq,
                "nf_grad": 0.0 if math.isfinite(grad_sq) else float(_nonfinite_count(grad)),
                "param_sq": param_sq,
                "nf_param": 0.0 if math.isfinite(param_sq) else float(_nonfinite_count(p)),
                "nf_state": nf_state,
                "update_sq": squared(plan["update"]) * lr * lr,
            }
        return out

    def _fused_sums(
        self,
        p: torch.Tensor,
        grad: torch.Tensor,
        state: Mapping[str, Any],
        group: Mapping[str, Any],
    ) -> dict[str, list[torch.Tensor]]:
        if self.kernel == "compiled":
            try:
                return compiled_sums(p, grad, state, group)
            except Exception as exc:  # no compiler, unsupported platform: stay correct, eager
                log.warning("rmswatch: compiled statistics kernel unavailable (%s); eager", exc)
                self.kernel = "eager"
        return self.adapter.fused_sums_chunked(p, grad, state, group, self._scratch_for(p))

    def _fusable(self, slot: Slot, grad: torch.Tensor | None, state: Mapping[str, Any]) -> bool:
        p = slot.param
        if grad is None or grad.is_sparse or slot.numel == 0:
            return False
        if p.dtype not in (torch.float32, torch.float64):
            return False
        if not isinstance(state.get(self.adapter.rms_state), torch.Tensor):
            return False
        tensors = [p, grad, *(t for t in state.values() if isinstance(t, torch.Tensor) and t.dim())]
        if not all(t.is_contiguous() and t.dtype == p.dtype for t in tensors):
            return False
        group = self.optimizer.param_groups[slot.group]
        return self.chunked or (group.get("momentum", 0) > 0 and "momentum_buffer" in state)

    def _distribution_chunkable(
        self, slot: Slot, state: Mapping[str, Any], group: Mapping[str, Any]
    ) -> bool:
        """Exact distributions a chunk at a time: plain square_avg (eff-LR is then monotone in
        it, so its quantiles are those of square_avg), finite state (NaN has no order) and
        log-spaced edges (the bucket comes from the log, corrected against the edges)."""
        return (
            self.chunked
            and self._log_spaced
            and not group.get("centered", False)
            # A tensor that fits in one chunk is cheaper whole: about half the ops, same memory.
            and slot.numel * slot.param.element_size() > self.chunk_bytes
        )

    def _exact_chunked(
        self,
        pk: Packer,
        fields: dict[str, tuple[str, int]],
        slot: Slot,
        rms_state: torch.Tensor,
        group: Mapping[str, Any],
    ) -> bool:
        """Exact eff-LR statistics and histogram without a full-size temporary or a sort.

        eff = lr / (sqrt(v) + eps) is non-increasing in v, so its lower q-quantile is eff of
        the value of v at the mirrored sorted position (`_kth_smallest`); the same ops on that
        one value give the same bits as on the whole tensor. Returns False, filling nothing,
        when some sqrt(v) is NaN (negative state): the per-layer path then handles the layer.
        """
        v = rms_state.reshape(-1)
        n = v.numel()
        lr = group["lr"]
        eps = group["eps"]
        rms_buf, log_buf = self._scratch_for(slot.param)
        idx_buf = self._index_scratch(rms_buf.numel())
        ext = self._extended_edges(v)
        nb = self.n_buckets
        raw = torch.zeros(nb + 2, dtype=torch.int64)
        zeros = torch.zeros((), dtype=torch.int64)
        sums: list[torch.Tensor] = []
        lows: list[torch.Tensor] = []
        highs: list[torch.Tensor] = []
        size = rms_buf.numel()
        for start in range(0, n, size):
            stop = min(start + size, n)
            r = rms_buf[: stop - start]
            t = log_buf[: stop - start]
            idx = idx_buf[: stop - start]
            torch.sqrt(v[start:stop], out=r)
            # raw = number of edges <= r (bucketize, right=True) from the log, then corrected
            # against the edges themselves: log10's rounding moves it by at most one.
            torch.log10(r, out=t)
            t.add_(-self._log_lo).mul_(self._per_decade).floor_().clamp_(-1, nb).add_(1)
            t.nan_to_num_(0.0)  # sqrt of a negative state value: the layer falls back below
            idx.copy_(t)
            idx += r >= ext.index_select(0, idx + 1)
            idx -= (r < ext.index_select(0, idx)).to(torch.int64)
            raw += torch.bincount(idx, minlength=nb + 2)
            zeros += (r == 0).sum()
            eff = r.add_(eps).reciprocal_().mul_(lr)
            sums.append(eff.sum(dtype=torch.float64))
            lo, hi = torch.aminmax(eff)
            lows.append(lo)
            highs.append(hi)
        total = torch.stack(sums).sum()
        if not math.isfinite(float(total)):
            return False
        # raw[j] counts values with j edges <= value: below the first edge (j=0) and at or above
        # the last (j=nb+1) are clamped into the end buckets; exact zeros sit in raw[0].
        counts = raw[1 : nb + 1].clone()
        counts[0] += raw[0] - zeros
        counts[nb - 1] += raw[nb + 1]
        fields["eff_lr_mean"] = pk.scalar(total / n)
        fields["eff_lr_min"] = pk.scalar(torch.stack(lows).min())
        fields["eff_lr_max"] = pk.scalar(torch.stack(highs).max())
        # k-th smallest eff = eff of the (n-1-k)-th smallest v.
        ks = [lower_quantile_index(n, q) for q in QUANTILES]
        for q, v_k in zip(QUANTILES, self._kth_smallest(v, [n - 1 - k for k in ks]), strict=True):
            fields[f"eff_lr_p{round(q * 100)}"] = pk.scalar(
                v_k.sqrt().add_(eps).reciprocal_().mul_(lr)
            )
        hist = torch.cat([counts, zeros.reshape(1), torch.zeros(1, dtype=torch.int64)])
        fields["hist"] = pk.vector(hist.to(torch.float64))
        return True

    def _kth_smallest(self, v: torch.Tensor, ranks: Sequence[int]) -> list[torch.Tensor]:
        """The rank-th (0-based) smallest values of a non-negative float32/float64 vector.

        Radix select instead of a sort: non-negative floats order like their bit patterns, so a
        count of the top 15 bits (sign dropped: -0.0 joins +0.0) puts each rank in one bin; a
        second pass gathers only that bin's values for `kthvalue`. Chunked, like the rest.
        """
        if v.numel() <= 1 << 16:  # small: selection directly beats two counting passes
            return [torch.kthvalue(v, rank + 1).values for rank in ranks]
        itype, shift = (torch.int32, 16) if v.dtype == torch.float32 else (torch.int64, 48)
        bits = v.view(itype)
        nbins = 1 << 15
        size = max(1, self.chunk_bytes // v.element_size())
        n = v.numel()
        counts = torch.zeros(nbins, dtype=torch.int64)
        for start in range(0, n, size):
            top = bits[start : start + size].bitwise_right_shift(shift).bitwise_and_(nbins - 1)
            counts += torch.bincount(top, minlength=nbins)
        cum = counts.cumsum(0)
        bins = torch.searchsorted(cum, torch.tensor(list(ranks)), right=True).tolist()
        wanted = sorted(set(bins))
        found: dict[int, list[torch.Tensor]] = {b: [] for b in wanted}
        for start in range(0, n, size):
            top = bits[start : start + size].bitwise_right_shift(shift).bitwise_and_(nbins - 1)
            chunk = v[start : start + size]
            for b in wanted:
                found[b].append(chunk[top == b])
        out: list[torch.Tensor] = []
        for rank, b in zip(ranks, bins, strict=True):
            below = int(cum[b - 1]) if b > 0 else 0
            values = torch.cat(found[b])
            out.append(torch.kthvalue(values, rank - below + 1).values)
        return out

    def _extended_edges(self, x: torch.Tensor) -> torch.Tensor:
        """[-inf, edges..., +inf] in x's dtype: ext[j] <= value < ext[j+1] iff j edges <= it."""
        key = (x.device, x.dtype, "ext")
        if key not in self._ext_edges:
            inf = float("inf")
            self._ext_edges[key] = torch.tensor(
                (-inf, *self.edges_list, inf), dtype=x.dtype, device=x.device
            )
        return self._ext_edges[key]

    def _index_scratch(self, size: int) -> torch.Tensor:
        if self._idx_scratch is None or self._idx_scratch.numel() < size:
            self._idx_scratch = torch.empty(size, dtype=torch.int64)
        return self._idx_scratch

    def _scratch_for(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (p.device, p.dtype)
        if key not in self._scratch:
            size = self.chunk_bytes // p.element_size()
            self._scratch[key] = (
                torch.empty(size, dtype=p.dtype, device=p.device),
                torch.empty(size, dtype=p.dtype, device=p.device),
            )
        return self._scratch[key]

    def _count_if(self, pk: Packer, norm: torch.Tensor, x: torch.Tensor) -> tuple[str, int]:
        if self.host_reads:
            if math.isfinite(float(norm)):
                return pk.scalar(0.0)
            return pk.scalar(float(_nonfinite_count(x)))
        return pk.scalar(_nonfinite_count(x))

    @staticmethod
    def _sum_refs(pk: Packer, refs: list[tuple[str, int]]) -> tuple[str, int]:
        if all(kind == "c" for kind, _ in refs):
            return pk.scalar(sum(pk.consts[i] for _, i in refs))
        total: torch.Tensor | float = 0.0
        for kind, i in refs:
            total = total + (pk.consts[i] if kind == "c" else pk.scalars[i])
        return pk.scalar(total)


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

        def opt(key: str, fields: dict[str, tuple[str, int]] = f) -> float | None:
            return r.get(fields[key]) if key in fields else None

        layers[lay.name] = LayerStats(
            grad_norm=_sqrt(r.get(f["grad_sq"])),
            param_norm=param_norm,
            update_norm=update_norm,
            update_ratio=ratio(update_norm, param_norm),
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


def ratio(update_norm: float, param_norm: float) -> float:
    """‖update‖ / ‖param‖: NaN when either norm is NaN (the step has no meaningful ratio, and an
    Inf would read as "huge update"), Inf when a zero parameter gets a non-zero update."""
    if math.isnan(update_norm) or math.isnan(param_norm):
        return math.nan
    if param_norm > 0:
        return update_norm / param_norm
    return 0.0 if update_norm == 0 else math.inf
