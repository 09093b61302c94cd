"""Distributions for the exporter: RMS and effective-LR bucket vectors of a record's histograms.

The hooks' histograms (fixed edges, `records.RMS_EDGES`) become Prometheus bucket vectors on the
catalogue's bounds; effective-LR vectors follow from lr / (centre + eps) of each RMS slot.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from rmswatch import catalogue as cat
from rmswatch.trainer_hooks.records import RMS_EDGES, Histogram, RunInfo, StepRecord

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

# Where each slot of an RMS vector (exact zeros, then the hooks' buckets) sits: its centre.
_RMS_CENTRES: FloatArray = np.array(
    [0.0] + [math.sqrt(lo * hi) for lo, hi in zip(RMS_EDGES[:-1], RMS_EDGES[1:], strict=True)]
)
EFF_BOUNDS: FloatArray = np.array(cat.EFFECTIVE_LR_BUCKET_BOUNDS)


@lru_cache(maxsize=64)
def _rebin_map(edges: tuple[float, ...]) -> tuple[int, ...]:
    """Slot in the RMS vector for each bucket of a histogram with other edges (by its centre)."""
    centres = [math.sqrt(lo * hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return tuple(bisect.bisect_left(cat.RMS_BUCKET_BOUNDS, c) for c in centres)


def rms_vector(hist: Histogram) -> FloatArray:
    """Counts of one histogram as an RMS vector: slot 0 exact zeros, then one per bucket."""
    if hist.edges == RMS_EDGES:
        return np.array((hist.zeros, *hist.counts), dtype=np.float64)
    out = np.zeros(len(cat.RMS_BUCKET_BOUNDS))
    out[0] = hist.zeros
    np.add.at(out, list(_rebin_map(hist.edges)), hist.counts)
    return out


@lru_cache(maxsize=256)
def _eff_map(lr: float, eps: float) -> tuple[int, ...]:
    with np.errstate(divide="ignore"):
        eff = lr / (_RMS_CENTRES + eps)
    return tuple(int(i) for i in np.searchsorted(EFF_BOUNDS, eff, side="left"))


def effective_lr_vector(rms: FloatArray, lr: float, eps: float) -> FloatArray:
    """Move each RMS slot whole to the effective-LR bucket of its centre (lr / (centre + eps))."""
    if not (math.isfinite(lr) and math.isfinite(eps)) or lr < 0 or eps < 0:
        return np.zeros(len(EFF_BOUNDS))
    index = np.fromiter(_eff_map(lr, eps), dtype=np.intp, count=len(_RMS_CENTRES))
    return np.bincount(index, weights=rms, minlength=len(EFF_BOUNDS)).astype(np.float64)


def quantile_from_buckets(counts: FloatArray, bounds: FloatArray, q: float) -> float | None:
    """Quantile q of bucketed counts, log-interpolated inside the bucket (None when empty)."""
    total = float(counts.sum())
    if total <= 0:
        return None
    cumulative = np.cumsum(counts)
    i = int(np.searchsorted(cumulative, q * total, side="left"))
    i = min(i, len(bounds) - 1)
    upper = float(bounds[i])
    lower = float(bounds[i - 1]) if i > 0 else 0.0
    if math.isinf(upper):
        return lower
    if lower <= 0:
        return upper
    below = float(cumulative[i - 1]) if i > 0 else 0.0
    frac = (q * total - below) / float(counts[i]) if counts[i] > 0 else 1.0
    return float(lower * (upper / lower) ** min(max(frac, 0.0), 1.0))


class Distributions:
    """RMS and effective-LR vectors of every layer of one record, summed lazily by member set."""

    def __init__(self, record: StepRecord, run: RunInfo | None) -> None:
        self.names = [n for n, s in record.layers.items() if s.rms_hist is not None]
        self.row = {name: i for i, name in enumerate(self.names)}
        rows = []
        for name in self.names:
            hist = record.layers[name].rms_hist
            assert hist is not None
            rows.append(
                (hist.zeros, *hist.counts)
                if hist.edges == RMS_EDGES
                else tuple(rms_vector(hist).tolist())
            )
        self.matrix: FloatArray = (
            np.array(rows, dtype=np.float64) if rows else np.zeros((0, len(cat.RMS_BUCKET_BOUNDS)))
        )
        self.group = np.array([record.layers[n].group for n in self.names], dtype=np.intp)
        hyper = run.hyperparameters if run is not None else ()
        lrs = record.lrs or (record.lr,)
        self.lr_eps: dict[int, tuple[float, float]] = {}
        for g in set(self.group.tolist()):
            lr = lrs[g] if g < len(lrs) else record.lr
            eps = float(hyper[g].get("eps", 1e-8)) if g < len(hyper) else 1e-8
            self.lr_eps[g] = (float(lr), eps)

    def of(self, members: Sequence[str] | None) -> tuple[FloatArray, FloatArray] | None:
        """(rms, eff) summed over `members` (None: every layer); None when none has a histogram."""
        if members is None:
            index = np.arange(len(self.names))
        else:
            index = np.array([self.row[m] for m in members if m in self.row], dtype=np.intp)
        if index.size == 0:
            return None
        rows, groups = self.matrix[index], self.group[index]
        rms = rows.sum(axis=0)
        eff = np.zeros(len(EFF_BOUNDS))
        for g in np.unique(groups).tolist():
            eff += effective_lr_vector(rows[groups == g].sum(axis=0), *self.lr_eps[g])
        return rms, eff
