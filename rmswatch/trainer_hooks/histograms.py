"""RMS histograms on fixed edges: bucketing, batched counts and largest-remainder scaling.

A count vector has `n_buckets + 2` entries: the buckets over the edges, then exact zeros, then
NaN/Inf/negative values (the layout `packing.decode` reads). `reference.histogram` is the plain
implementation these must equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class RmsBuckets:
    """The fixed edges, with tensors of them cached per device and dtype."""

    def __init__(self, edges: Sequence[float], *, host_reads: bool) -> None:
        self.edges = tuple(float(e) for e in edges)
        self.n_buckets = len(self.edges) - 1
        # bincount sizes its output from the data: a host sync on CUDA, where index_add_ is used.
        self.host_reads = host_reads
        self._tensors: dict[tuple[torch.device, torch.dtype, str], torch.Tensor] = {}
        # Log-spaced edges let a chunked pass bucket by log10: bucket j starts at
        # 10**(log_lo + j / per_decade).
        self.log_lo = math.log10(self.edges[0]) if self.edges[0] > 0 else 0.0
        span = math.log10(self.edges[-1]) - self.log_lo if self.edges[0] > 0 else 0.0
        self.per_decade = self.n_buckets / span if span > 0 else 0.0
        self.log_spaced = self.per_decade > 0 and all(
            abs((math.log10(e) - self.log_lo) * self.per_decade - j) < 0.01
            for j, e in enumerate(self.edges)
        )

    def edges_like(self, x: torch.Tensor) -> torch.Tensor:
        return self._cached(x, "edges", self.edges)

    def extended_edges_like(self, x: torch.Tensor) -> torch.Tensor:
        """[-inf, edges..., +inf] in x's dtype: ext[j] <= value < ext[j+1] iff j edges <= it."""
        inf = float("inf")
        return self._cached(x, "ext", (-inf, *self.edges, inf))

    def _cached(self, x: torch.Tensor, kind: str, values: Sequence[float]) -> torch.Tensor:
        key = (x.device, x.dtype, kind)
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(values, dtype=x.dtype, device=x.device)
        return self._tensors[key]

    def index(self, rms: torch.Tensor) -> torch.Tensor:
        """Bucket of each value: 0..n_buckets-1 over edges, n_buckets zero, n_buckets+1 other."""
        nb = self.n_buckets
        idx = torch.bucketize(rms, self.edges_like(rms), right=True).sub_(1).clamp_(0, nb - 1)
        idx = torch.where(rms == 0, nb, idx)
        return torch.where(torch.isfinite(rms) & (rms >= 0), idx, nb + 1)

    def counts(self, rms: torch.Tensor) -> torch.Tensor:
        """Counts over edges, then zeros, then non-finite (n_buckets + 2 entries, float64)."""
        nb = self.n_buckets
        idx = self.index(rms)
        if self.host_reads:
            return torch.bincount(idx, minlength=nb + 2).to(torch.float64)
        counts = torch.zeros(nb + 2, dtype=torch.float64, device=rms.device)
        return counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def counts_rows(self, rms: torch.Tensor) -> torch.Tensor:
        """Counts of each row of a [layers, n] matrix: one bincount with per-row offsets."""
        n_layers = rms.shape[0]
        nb2 = self.n_buckets + 2
        idx = self.index(rms).add_(torch.arange(n_layers, device=rms.device).mul_(nb2).unsqueeze(1))
        counts = torch.bincount(idx.reshape(-1), minlength=n_layers * nb2)
        return counts.reshape(n_layers, nb2).to(torch.float64)


def scale_counts_rows(counts: torch.Tensor, sampled: int, numels: torch.Tensor) -> torch.Tensor:
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
