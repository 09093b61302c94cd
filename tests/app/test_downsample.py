"""The vectorised min/max downsampler keeps exactly what the reference loop keeps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rmswatch.app.downsample import downsample_frame, minmax_indices, minmax_indices_reference


@pytest.mark.parametrize("length", [0, 1, 2, 7, 100, 1001, 4096])
@pytest.mark.parametrize("buckets", [1, 3, 50, 5000])
def test_fast_path_keeps_the_same_indices_as_the_reference(length: int, buckets: int) -> None:
    rng = np.random.default_rng(length * 31 + buckets)
    values = rng.normal(size=length)
    if length > 10:
        values[rng.integers(0, length, size=length // 10)] = np.nan
        values[rng.integers(0, length, size=3)] = np.inf
    expected = minmax_indices_reference(list(values), buckets)
    assert minmax_indices(values, buckets).tolist() == expected


def test_a_single_spike_in_a_million_points_survives() -> None:
    values = np.zeros(1_000_000)
    values[654_321] = 1e6
    values[123_456] = math.nan
    kept = minmax_indices(values, 1000)
    assert 654_321 in kept and 123_456 in kept
    assert len(kept) <= 3 * 1000 + 2


def test_downsampled_frame_is_bounded_and_keeps_each_columns_extremes() -> None:
    steps = np.arange(200_000)
    frame = pd.DataFrame({"step": steps, "loss": np.sin(steps / 1000.0), "grad": steps % 97})
    frame.loc[77_777, "loss"] = 50.0
    shown = downsample_frame(frame, ["loss", "grad"], max_points=4000)
    assert len(shown) <= 4000 + 2
    assert shown["loss"].max() == 50.0 and shown["grad"].max() == 96
    assert shown["step"].is_monotonic_increasing


def test_short_frames_come_back_unchanged() -> None:
    frame = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]})
    assert downsample_frame(frame, ["loss"]) is frame
