"""Burn-rate arithmetic and the incremental bucket history, checked against plain sums."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rmswatch.alerting.slo import (
    BucketHistory,
    budget_remaining,
    burn_rate,
    time_to_exhaustion,
    window_sums_reference,
)


def test_burn_rate_is_error_ratio_over_error_budget() -> None:
    rate = burn_rate(np.array([144.0, 0.0]), np.array([10000.0, 0.0]), 0.001)
    assert rate[0] == pytest.approx(14.4)
    assert np.isnan(rate[1])  # no events: no verdict, not zero


def test_budget_remaining_and_time_to_exhaustion() -> None:
    remaining = budget_remaining(np.array([5.0, 20.0]), np.array([10000.0, 10000.0]), 0.001)
    assert remaining == pytest.approx([0.5, -1.0])
    seconds = time_to_exhaustion(remaining, np.array([2.0, 2.0]), 30 * 86400)
    # half the budget left, burning 2x: a quarter of the period
    assert seconds[0] == pytest.approx(7.5 * 86400)
    assert seconds[1] == 0.0
    assert time_to_exhaustion(np.array([0.5]), np.array([0.0]), 100.0)[0] == np.inf


def test_incremental_history_equals_a_full_recount_after_every_tick() -> None:
    rng = np.random.default_rng(7)
    bucket = 60
    history = BucketHistory(bucket, longest_window=120, period=6 * 3600, lookback=5)
    events = []
    now = 1_000_000.0
    lengths = (1, 5, 30, 120)
    history.advance(int(now // bucket))
    for _tick in range(80):
        now += float(rng.integers(10, 200))
        end = int(now // bucket)
        history.advance(end)
        # new events, some arriving late (within the lookback the next replace re-reads)
        events += [
            {"key": f"job-{rng.integers(0, 4)}", "time": now - float(rng.integers(0, 240)),
             "good": float(rng.integers(0, 5)), "total": 5.0}
            for _ in range(int(rng.integers(0, 8)))
        ]  # fmt: skip
        frame = pd.DataFrame(events)
        from_bucket = end - 5
        recent = frame[frame["time"] // bucket >= from_bucket]
        counts = recent.assign(bucket=(recent["time"] // bucket).astype("int64"))
        counts = counts.groupby(["key", "bucket"], as_index=False)[["good", "total"]].sum()
        history.replace(from_bucket, counts)
        sums = history.window_sums(lengths)
        for length in lengths:
            expected = window_sums_reference(frame, now, length * bucket, bucket)
            for key, row in expected.iterrows():
                i = history.index[str(key)]
                assert sums[length][0][i] == pytest.approx(row["good"])
                assert sums[length][1][i] == pytest.approx(row["total"])
    # the period sum covers whole coarse (hour) buckets only
    good, total = history.period_sums()
    hour = bucket * 60
    first = (int(now // hour) - history.coarse_len + 1) * hour
    kept = frame[frame["time"] >= first]
    assert total.sum() == pytest.approx(kept["total"].sum())
    assert good.sum() == pytest.approx(kept["good"].sum())
