"""Min/max-preserving downsampling, so a million-step run ships a few thousand points.

The series is cut into equal-count index buckets; each bucket keeps the index of its smallest and
largest finite value and of its first non-finite one (a NaN spike must survive downsampling), plus
the series' first and last points. `minmax_indices_reference` is the plain loop that defines the
result; `minmax_indices` is the vectorised path the app uses, tested to return the same indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

DEFAULT_MAX_POINTS = 4000


def bucket_size(length: int, buckets: int) -> int:
    """Points per bucket so that `length` points make at most `buckets` buckets."""
    return max(1, -(-length // max(1, buckets)))


def minmax_indices_reference(values: Sequence[float], buckets: int) -> list[int]:
    """Sorted indices to keep: per bucket the min, the max and the first non-finite value."""
    length = len(values)
    if length == 0:
        return []
    size = bucket_size(length, buckets)
    keep = {0, length - 1}
    for start in range(0, length, size):
        lowest: int | None = None
        highest: int | None = None
        first_bad: int | None = None
        for index in range(start, min(start + size, length)):
            value = values[index]
            if value is None or not math.isfinite(value):
                if first_bad is None:
                    first_bad = index
                continue
            if lowest is None or value < values[lowest]:
                lowest = index
            if highest is None or value > values[highest]:
                highest = index
        keep.update(i for i in (lowest, highest, first_bad) if i is not None)
    return sorted(keep)


def minmax_indices(values: npt.ArrayLike, buckets: int) -> npt.NDArray[np.int64]:
    """Vectorised `minmax_indices_reference` (same indices, same order)."""
    array = np.asarray(values, dtype=np.float64)
    length = array.shape[0]
    if length == 0:
        return np.empty(0, dtype=np.int64)
    size = bucket_size(length, buckets)
    rows = -(-length // size)
    padded = np.full(rows * size, np.nan)
    padded[:length] = array
    grid = padded.reshape(rows, size)
    finite = np.isfinite(grid)
    offsets = np.arange(rows, dtype=np.int64) * size
    # argmin/argmax return the first extreme, like the reference's strict comparisons
    lowest = np.where(finite, grid, np.inf).argmin(axis=1) + offsets
    highest = np.where(finite, grid, -np.inf).argmax(axis=1) + offsets
    has_finite = finite.any(axis=1)
    bad = ~finite
    bad.reshape(-1)[length:] = False  # padding is not data
    first_bad = bad.argmax(axis=1) + offsets
    has_bad = bad.any(axis=1)
    keep = np.concatenate(
        [
            np.array([0, length - 1], dtype=np.int64),
            lowest[has_finite],
            highest[has_finite],
            first_bad[has_bad],
        ]
    )
    return np.unique(keep)


def downsample_frame(
    frame: pd.DataFrame, columns: Sequence[str], max_points: int = DEFAULT_MAX_POINTS
) -> pd.DataFrame:
    """Rows of `frame` (in order) that keep every column's per-bucket extremes.

    A frame with at most `max_points` rows comes back unchanged. Otherwise each column keeps up to
    three points per bucket, with the bucket count chosen so the result stays near `max_points`.
    """
    if len(frame) <= max_points or not columns:
        return frame
    buckets = max(1, max_points // (3 * len(columns)))
    keep = np.unique(
        np.concatenate(
            [
                minmax_indices(pd.to_numeric(frame[c], errors="coerce").to_numpy(float), buckets)
                for c in columns
            ]
        )
    )
    return frame.iloc[keep].reset_index(drop=True)
