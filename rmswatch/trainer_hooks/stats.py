"""Per-step statistics on the parameters' device, packed into one float64 buffer.

`StatsEngine.compute()` runs in the optimizer's post-step hook and returns a `packing.Packed`;
`packing.decode()` turns the host copy of its buffer into `LayerStats`. The engine follows a
`plan.StatsPlan` chosen once at construction: the CPU fused pass (`cpu_fused`) for plain dense
layers, the per-layer code here for everything else (CUDA, low precision, sparse, odd layouts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rmswatch.trainer_hooks.adapters import Adapter
from rmswatch.trainer_hooks.cpu_fused import FusedCpuPass, nonfinite_count
from rmswatch.trainer_hooks.histograms import RmsBuckets, scale_counts_rows
from rmswatch.trainer_hooks.packing import LayerLayout, Packed, Packer, Ref, Slot
from rmswatch.trainer_hooks.plan import StatsPlan
from rmswatch.trainer_hooks.records import RMS_EDGES
from rmswatch.trainer_hooks.selection import (
    QUANTILES,
    lower_quantile_index,
    quantile_field,
    weighted_lower_quantiles,
    weighted_lower_quantiles_sorted,
)

_SampledRow = tuple[dict[str, Ref], int, torch.Tensor, torch.Tensor]
_PREPASS_KEYS = ("grad_sq", "nf_grad", "param_sq", "nf_param", "nf_state", "update_sq")


class StatsEngine:
    """Computes one step's statistics for every slot; see docs/hooks.md for each formula."""

    def __init__(
        self,
        adapter: Adapter,
        optimizer: torch.optim.Optimizer,
        slots: Sequence[Slot],
        plan: StatsPlan,
        *,
        sample_seed: int = 0,
        edges: Sequence[float] = RMS_EDGES,
    ) -> None:
        self.adapter = adapter
        self.optimizer = optimizer
        self.slots = list(slots)
        self.device = self.slots[0].param.device if self.slots else torch.device(plan.device)
        self._plan = plan
        self.buckets = RmsBuckets(edges, host_reads=plan.host_reads)
        self.fused: FusedCpuPass | None = None
        if plan.host_reads:
            self.fused = FusedCpuPass(
                adapter,
                optimizer,
                self.slots,
                self.buckets,
                chunked=plan.norms == "fused",
                chunk_bytes=plan.chunk_bytes,
                kernel=plan.kernel,
            )
        generator = torch.Generator().manual_seed(sample_seed)
        for slot in self.slots:
            if slot.numel > plan.sample_size:
                idx = torch.randperm(slot.numel, generator=generator)[: plan.sample_size]
                slot.sample = idx.sort().values.to(slot.param.device)

    @property
    def plan(self) -> StatsPlan:
        """The plan as it runs now: a compiled kernel that failed to build reads "eager"."""
        if self.fused is not None and self.fused.kernel != self._plan.kernel:
            return dataclasses.replace(self._plan, kernel="eager")
        return self._plan

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
        # fused pass and one host read; the per-layer code handles the rest.
        pre = self.fused.prepass() if self.fused is not None else {}
        sampled: dict[torch.dtype, list[_SampledRow]] = {}
        for index, slot in enumerate(self.slots):
            group = groups[slot.group]
            p = slot.param
            grad = p.grad
            has_grad = grad is not None
            sparse = bool(grad is not None and grad.is_sparse)
            fields: dict[str, Ref] = {}
            layout = LayerLayout(slot.name, slot.group, slot.numel, has_grad, sparse, True, fields)
            layers.append(layout)
            work = torch.float64 if p.dtype == torch.float64 else torch.float32
            state: Mapping[str, Any] = opt.state.get(p, {})
            rms_state = state.get(self.adapter.rms_state)
            has_state = isinstance(rms_state, torch.Tensor)

            denominator: torch.Tensor | None = None
            done = pre.get(index)
            if done is not None:
                layout.path = done["path"]
                for key in _PREPASS_KEYS:
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
                    and self.fused is not None
                    and self.fused.distribution_chunkable(slot, group)
                    and self.fused.exact_distribution(pk, fields, slot, rms_state, group)
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
        global_fields: dict[str, Ref] = {}
        if global_eff:
            vals = torch.cat([e.to(torch.float64) for e in global_eff])
            weights = torch.cat([w.to(torch.float64) for w in global_w])
            radix = (
                weighted_lower_quantiles(vals, weights, QUANTILES)
                if self._plan.host_reads
                else None
            )
            if radix is not None:
                for q, value in zip(QUANTILES, radix, strict=True):
                    global_fields[quantile_field(q)] = pk.scalar(value)
            elif vals.numel():
                picked = weighted_lower_quantiles_sorted(vals, weights, QUANTILES)
                for q, at in zip(QUANTILES, picked, strict=True):
                    global_fields[quantile_field(q)] = pk.scalar(at)
        lrs = [pk.scalar(g["lr"]) for g in groups]
        return Packed(pk.pack(self.device), pk, layers, lrs, global_fields)

    # -- distributions -------------------------------------------------------------------------

    def _distribution(
        self, pk: Packer, fields: dict[str, Ref], rms: torch.Tensor, eff: torch.Tensor
    ) -> None:
        """eff-LR mean/min/quantiles/max and RMS histogram of the given values (flat, float)."""
        n = eff.numel()
        fields["eff_lr_mean"] = pk.scalar(eff.mean(dtype=torch.float64))
        fields["eff_lr_min"] = pk.scalar(eff.min())
        fields["eff_lr_max"] = pk.scalar(eff.max())
        for q in QUANTILES:
            k = lower_quantile_index(n, q)
            fields[quantile_field(q)] = pk.scalar(torch.kthvalue(eff, k + 1).values)
        fields["hist"] = pk.vector(self.buckets.counts(rms))

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

    def _sampled_distributions(self, pk: Packer, rows: list[_SampledRow]) -> None:
        """eff-LR statistics and scaled histograms of every sampled layer, batched: one sort,
        one bucketize and one bincount for all of them (each sample has `sample_size` values)."""
        eff = torch.stack([r[2] for r in rows])
        rms = torch.stack([r[3] for r in rows])
        n_s = eff.shape[1]
        means = eff.mean(dim=1, dtype=torch.float64)
        lows, highs = torch.aminmax(eff, dim=1)
        picks = [lower_quantile_index(n_s, q) for q in QUANTILES]
        # Two selections over all rows at once cost less than one sort of them.
        selected = [eff.kthvalue(k + 1, dim=1).values for k in picks]
        counts = self.buckets.counts_rows(rms)
        numels = torch.tensor([float(r[1]) for r in rows], dtype=torch.float64, device=eff.device)
        scaled = scale_counts_rows(counts, n_s, numels)
        for i, (fields, _, _, _) in enumerate(rows):
            fields["eff_lr_mean"] = pk.scalar(means[i])
            fields["eff_lr_min"] = pk.scalar(lows[i])
            fields["eff_lr_max"] = pk.scalar(highs[i])
            for q, values in zip(QUANTILES, selected, strict=True):
                fields[quantile_field(q)] = pk.scalar(values[i])
            fields["hist"] = pk.vector(scaled[i])

    # -- the per-layer path --------------------------------------------------------------------

    def _layer_norms(
        self,
        pk: Packer,
        fields: dict[str, Ref],
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
        nf_state: list[Ref] = []
        state_norms: dict[str, torch.Tensor] = {}
        for key in self.adapter.state_keys:
            t = state.get(key)
            if isinstance(t, torch.Tensor) and t.numel() == slot.numel:
                sn = torch.linalg.vector_norm(t, dtype=work)
                state_norms[key] = sn
                nf_state.append(self._count_if(pk, sn, t))
        fields["nf_state"] = pk.sum_refs(nf_state)

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

    def _count_if(self, pk: Packer, norm: torch.Tensor, x: torch.Tensor) -> Ref:
        if self._plan.host_reads:
            if math.isfinite(float(norm)):
                return pk.scalar(0.0)
            return pk.scalar(float(nonfinite_count(x)))
        return pk.scalar(nonfinite_count(x))
