"""Order statistics without a full sort: lower quantiles by radix select on float bit patterns.

Non-negative floats order like their bit patterns, so a count of the top 15 bits puts each
wanted rank in one bin, and only that bin is searched. `reference.lower_quantile` and
`reference.weighted_lower_quantile` are the plain implementations these must equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

QUANTILES = (0.5, 0.95)
_NBINS = 1 << 15


def lower_quantile_index(n: int, q: float) -> int:
    """0-based sorted position of the q-quantile with 'lower' interpolation."""
    return int(math.floor(q * (n - 1)))


def quantile_field(q: float) -> str:
    """The record field of quantile q: eff_lr_p50, eff_lr_p95."""
    return f"eff_lr_p{round(q * 100)}"


def weighted_lower_quantiles(
    vals: torch.Tensor, weights: torch.Tensor, qs: Sequence[float]
) -> list[float] | None:
    """Weighted 'lower' quantiles of float64 values (CPU, host reads), without a full sort.

    For each q: the smallest value whose cumulative weight (values in ascending order)
    reaches q * total. A weighted count of the top 15 bits finds the bin holding each answer,
    and only that bin is sorted. None when some value is negative or not finite (the caller
    sorts instead).
    """
    if vals.numel() == 0:
        return None
    lo, hi = torch.aminmax(vals)
    if not (float(lo) >= 0 and math.isfinite(float(hi))):
        return None
    top = vals.view(torch.int64).bitwise_right_shift(48).bitwise_and_(_NBINS - 1)
    cum = torch.bincount(top, weights=weights, minlength=_NBINS).cumsum(0)
    total = float(cum[-1])
    targets = torch.tensor([q * total for q in qs], dtype=torch.float64)
    bins = torch.searchsorted(cum, targets).clamp_(max=_NBINS - 1).tolist()
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


def weighted_lower_quantiles_sorted(
    vals: torch.Tensor, weights: torch.Tensor, qs: Sequence[float]
) -> list[torch.Tensor]:
    """The same quantiles by one argsort, as 1-element tensors: no host read (CUDA, NaN)."""
    order = torch.argsort(vals)
    cum = weights[order].cumsum(0)
    total = cum[-1]
    out: list[torch.Tensor] = []
    for q in qs:
        # Weighted 'lower' quantile: first value whose cumulative weight reaches q*total.
        pos = torch.searchsorted(cum, total * q).clamp_(max=vals.numel() - 1)
        at = order.index_select(0, pos.reshape(1))  # no host read of `pos`
        out.append(vals.index_select(0, at))
    return out


def kth_smallest(v: torch.Tensor, ranks: Sequence[int], chunk_bytes: int) -> list[torch.Tensor]:
    """The rank-th (0-based) smallest values of a non-negative float32/float64 vector (CPU).

    Radix select instead of a sort: a count of the top 15 bits (sign dropped: -0.0 joins +0.0)
    puts each rank in one bin; a second pass gathers only that bin's values for `kthvalue`.
    Both passes go `chunk_bytes` at a time, so no temporary as large as `v` is made.
    """
    if v.numel() <= 1 << 16:  # small: selection directly beats two counting passes
        return [torch.kthvalue(v, rank + 1).values for rank in ranks]
    itype, shift = (torch.int32, 16) if v.dtype == torch.float32 else (torch.int64, 48)
    bits = v.view(itype)
    size = max(1, chunk_bytes // v.element_size())
    n = v.numel()
    counts = torch.zeros(_NBINS, dtype=torch.int64)
    for start in range(0, n, size):
        top = bits[start : start + size].bitwise_right_shift(shift).bitwise_and_(_NBINS - 1)
        counts += torch.bincount(top, minlength=_NBINS)
    cum = counts.cumsum(0)
    bins = torch.searchsorted(cum, torch.tensor(list(ranks)), right=True).tolist()
    wanted = sorted(set(bins))
    found: dict[int, list[torch.Tensor]] = {b: [] for b in wanted}
    for start in range(0, n, size):
        top = bits[start : start + size].bitwise_right_shift(shift).bitwise_and_(_NBINS - 1)
        chunk = v[start : start + size]
        for b in wanted:
            found[b].append(chunk[top == b])
    out: list[torch.Tensor] = []
    for rank, b in zip(ranks, bins, strict=True):
        below = int(cum[b - 1]) if b > 0 else 0
        values = torch.cat(found[b])
        out.append(torch.kthvalue(values, rank - below + 1).values)
    return out
