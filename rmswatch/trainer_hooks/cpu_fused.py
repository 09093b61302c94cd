"""The CPU fast path: one fused chunk pass per layer for norms and finiteness, and exact
distributions a chunk at a time, without full-size temporaries or sorts (docs/hooks.md).

`StatsEngine` uses this when its plan says `norms="fused"`; the per-layer path in `stats.py`
is the reference these are tested against (and `reference.py` the float64 one).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rmswatch.trainer_hooks.adapters import Adapter, compiled_sums
from rmswatch.trainer_hooks.histograms import RmsBuckets
from rmswatch.trainer_hooks.packing import Packer, Ref, Slot
from rmswatch.trainer_hooks.selection import (
    QUANTILES,
    kth_smallest,
    lower_quantile_index,
    quantile_field,
)

log = logging.getLogger(__name__)

_NormRef = tuple[str, torch.dtype, int, int]


def nonfinite_count(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).logical_not_().sum()


class FusedCpuPass:
    """Norms, update norms and non-finite counts of every fusable layer, read back at once."""

    def __init__(
        self,
        adapter: Adapter,
        optimizer: torch.optim.Optimizer,
        slots: Sequence[Slot],
        buckets: RmsBuckets,
        *,
        chunked: bool,
        chunk_bytes: int,
        kernel: str,
    ) -> None:
        self.adapter = adapter
        self.optimizer = optimizer
        self.slots = slots
        self.buckets = buckets
        # False (plan norms="per-layer"): only momentum layers, whose norms are all plain
        # `_foreach_norm`s, come through here; no chunk pass, no scratch.
        self.chunked = chunked
        self.chunk_bytes = chunk_bytes
        # "compiled" falls back to "eager" for the rest of the run if compiling fails.
        self.kernel = kernel
        self._scratch: dict[
            tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]
        ] = {}
        self._idx_scratch: torch.Tensor | None = None

    def prepass(self) -> dict[int, dict[str, Any]]:
        """Slot index -> {grad_sq, nf_grad, param_sq, nf_param, nf_state, update_sq, path}.

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

        def norm_of(t: torch.Tensor) -> _NormRef:
            lst = to_norm.setdefault(t.dtype, [])
            lst.append(t)
            return ("n", t.dtype, len(lst) - 1, len(lst))

        def sum_of(parts: list[torch.Tensor], dtype: torch.dtype) -> _NormRef:
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
                plan["path"] = "foreach"
                plan["grad"] = norm_of(grad)
                plan["param"] = norm_of(p)
                plan["state"] = {k: norm_of(t) for k, t in tensors.items()}
                plan["update"] = plan["state"]["momentum_buffer"]
            else:
                plan["path"] = "fused"
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

        def squared(ref: _NormRef) -> float:
            kind, dtype, lo, hi = ref
            base = offsets[(kind, dtype)]
            if kind == "n":
                return float(values[base + lo]) ** 2
            return math.fsum(values[base + lo : base + hi])

        out: dict[int, dict[str, Any]] = {}
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
                        int(nonfinite_count(t))
                        for k in self.adapter.state_keys
                        if isinstance(t := state.get(k), torch.Tensor) and t.numel() == slot.numel
                    )
                )
            out[index] = {
                "grad_sq": grad_sq,
                "nf_grad": 0.0 if math.isfinite(grad_sq) else float(nonfinite_count(grad)),
                "param_sq": param_sq,
                "nf_param": 0.0 if math.isfinite(param_sq) else float(nonfinite_count(p)),
                "nf_state": nf_state,
                "update_sq": squared(plan["update"]) * lr * lr,
                "path": plan["path"],
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

    def distribution_chunkable(self, slot: Slot, group: Mapping[str, Any]) -> bool:
        """Exact distributions a chunk at a time: plain square_avg (eff-LR is then monotone in
        it, so its quantiles are those of square_avg) and log-spaced edges (the bucket comes
        from the log, corrected against the edges). Finite state is checked by the caller."""
        return (
            self.chunked
            and self.buckets.log_spaced
            and not group.get("centered", False)
            # A tensor that fits in one chunk is cheaper whole: about half the ops, same memory.
            and slot.numel * slot.param.element_size() > self.chunk_bytes
        )

    def exact_distribution(
        self,
        pk: Packer,
        fields: dict[str, Ref],
        slot: Slot,
        rms_state: torch.Tensor,
        group: Mapping[str, Any],
    ) -> bool:
        """Exact eff-LR statistics and histogram without a full-size temporary or a sort.

        eff = lr / (sqrt(v) + eps) is non-increasing in v, so its lower q-quantile is eff of
        the value of v at the mirrored sorted position (`kth_smallest`); the same ops on that
        one value give the same bits as on the whole tensor. Returns False, filling nothing,
        when some sqrt(v) is NaN (negative state): the per-layer path then handles the layer.
        """
        v = rms_state.reshape(-1)
        n = v.numel()
        lr = group["lr"]
        eps = group["eps"]
        b = self.buckets
        rms_buf, log_buf = self._scratch_for(slot.param)
        idx_buf = self._index_scratch(rms_buf.numel())
        ext = b.extended_edges_like(v)
        nb = b.n_buckets
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
            t.add_(-b.log_lo).mul_(b.per_decade).floor_().clamp_(-1, nb).add_(1)
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
        picked = kth_smallest(v, [n - 1 - k for k in ks], self.chunk_bytes)
        for q, v_k in zip(QUANTILES, picked, strict=True):
            fields[quantile_field(q)] = pk.scalar(v_k.sqrt().add_(eps).reciprocal_().mul_(lr))
        hist = torch.cat([counts, zeros.reshape(1), torch.zeros(1, dtype=torch.int64)])
        fields["hist"] = pk.vector(hist.to(torch.float64))
        return True

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
