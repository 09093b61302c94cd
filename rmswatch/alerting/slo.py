"""Burn rates, error budget remaining and time to exhaustion; the per-series bucket history.

`BucketHistory` keeps good/total event counts per series in fine buckets (1 minute for a 30-day
SLO) over the longest alert window and in coarse buckets (60 fine ones) over the SLO period, so
a tick adds the last few buckets instead of re-reading 30 days. The pure functions are what the
SLO view calls; the reference `window_sums_reference` is the slow, obvious version they are tested
against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from rmswatch.alerting.spec import BurnWindow, SloSpec, burn_policy

FloatArray = npt.NDArray[np.float64]
COARSE_FACTOR = 60


def burn_rate(bad: FloatArray, total: FloatArray, error_budget: float) -> FloatArray:
    """Error ratio / (1 - objective); NaN where a window holds no events."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, bad / np.where(total > 0, total, 1.0), np.nan) / error_budget


def budget_remaining(bad: FloatArray, total: FloatArray, error_budget: float) -> FloatArray:
    """Fraction of the period's error budget left (1: untouched, 0: spent, < 0: overspent)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(total > 0, bad / np.where(total > 0, total, 1.0), 0.0)
    return 1.0 - ratio / error_budget


def time_to_exhaustion(remaining: FloatArray, burn: FloatArray, period: float) -> FloatArray:
    """Seconds until the budget is spent at the current burn rate (inf: not burning)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = np.where(burn > 0, np.maximum(remaining, 0.0) * period / burn, np.inf)
    return np.where(np.isnan(burn), np.inf, seconds)


def bucket_seconds_for(windows: tuple[BurnWindow, ...]) -> int:
    """Fine bucket size: a fifth of the shortest window, between 1s and 60s."""
    shortest = min(min(w.short, w.long) for w in windows)
    return int(max(1, min(60, math.floor(shortest / 5))))


def window_buckets(seconds: float, bucket_seconds: int) -> int:
    """A window rounded up to whole buckets (at least one)."""
    return max(1, math.ceil(seconds / bucket_seconds - 1e-9))


@dataclass(frozen=True)
class SloWindows:
    """An SLO's alert windows scaled to its period, and the bucket sizes that hold them."""

    windows: tuple[BurnWindow, ...]
    bucket_seconds: int
    period: float

    @classmethod
    def for_spec(cls, spec: SloSpec) -> SloWindows:
        windows = burn_policy().scaled(spec.period)
        return cls(windows, bucket_seconds_for(windows), spec.period)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Every distinct window length, in buckets."""
        found = {window_buckets(w.long, self.bucket_seconds) for w in self.windows}
        found |= {window_buckets(w.short, self.bucket_seconds) for w in self.windows}
        return tuple(sorted(found))


class BucketHistory:
    """Good/total counts per series: fine ring over the alert windows, coarse ring over the period.

    Buckets are absolute (floor(epoch / bucket_seconds)). `replace` overwrites a range of
    recent fine buckets (telemetry that arrived late is counted, nothing twice); each fine
    change is mirrored into its coarse bucket, so both rings always agree.
    """

    def __init__(self, bucket_seconds: int, longest_window: int, period: float, lookback: int):
        self.bucket_seconds = bucket_seconds
        self.fine_len = longest_window + COARSE_FACTOR + lookback + 2
        self.coarse_len = max(1, math.ceil(period / (bucket_seconds * COARSE_FACTOR)))
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.fine = np.zeros((2, 16, self.fine_len), dtype=np.float32)  # [good|total, series, b]
        self.coarse = np.zeros((2, 16, self.coarse_len), dtype=np.float64)
        self.end: int | None = None

    @property
    def fine_start(self) -> int:
        assert self.end is not None
        return self.end - self.fine_len + 1

    def _rows(self, keys: pd.Series) -> npt.NDArray[np.intp]:
        for key in keys.unique():
            if key not in self.index:
                self.index[key] = len(self.keys)
                self.keys.append(key)
        if len(self.keys) > self.fine.shape[1]:
            grow = max(len(self.keys), 2 * self.fine.shape[1]) - self.fine.shape[1]
            self.fine = np.concatenate(
                [self.fine, np.zeros((2, grow, self.fine_len), np.float32)], 1
            )
            self.coarse = np.concatenate(
                [self.coarse, np.zeros((2, grow, self.coarse_len), np.float64)], 1
            )
        return np.asarray(keys.map(self.index).to_numpy(), dtype=np.intp)

    def ensure(self, keys: pd.Series) -> None:
        """Make sure these series exist (with no events yet if new)."""
        self._rows(keys)

    def advance(self, end: int) -> None:
        """Move the newest bucket to `end`, emptying the slots of buckets that left the rings."""
        if self.end is None:
            self.end = end
            return
        if end <= self.end:
            return
        fresh = np.arange(max(self.end + 1, end - self.fine_len + 1), end + 1)
        self.fine[:, :, fresh % self.fine_len] = 0
        old_c, new_c = self.end // COARSE_FACTOR, end // COARSE_FACTOR
        fresh_c = np.arange(max(old_c + 1, new_c - self.coarse_len + 1), new_c + 1)
        self.coarse[:, :, fresh_c % self.coarse_len] = 0
        self.end = end

    def add_coarse(self, counts: pd.DataFrame) -> None:
        """Cold load of coarse buckets (`bucket` in coarse units) older than the fine ring."""
        assert self.end is not None
        first_fine_c = -(-self.fine_start // COARSE_FACTOR)  # first coarse bucket wholly fine
        oldest = self.end // COARSE_FACTOR - self.coarse_len + 1
        counts = counts[(counts["bucket"] < first_fine_c) & (counts["bucket"] >= oldest)]
        rows = self._rows(counts["key"])
        slots = counts["bucket"].to_numpy() % self.coarse_len
        np.add.at(self.coarse[0], (rows, slots), counts["good"].to_numpy())
        np.add.at(self.coarse[1], (rows, slots), counts["total"].to_numpy())

    def replace(self, from_bucket: int, counts: pd.DataFrame) -> None:
        """Counts for fine buckets >= from_bucket are these (key, bucket, good, total) rows."""
        assert self.end is not None
        start = max(from_bucket, self.fine_start)
        if start <= self.end:
            cleared = np.arange(start, self.end + 1)
            slots = cleared % self.fine_len
            n = len(self.keys)
            old = self.fine[:, :n, :][:, :, slots].astype(np.float64)
            coarse_slots = (cleared // COARSE_FACTOR) % self.coarse_len
            # mirror the removal into the coarse ring, bucket by bucket
            for i, cslot in enumerate(coarse_slots):
                self.coarse[:, :n, cslot] -= old[:, :, i]
            self.fine[:, :, slots] = 0
        counts = counts[(counts["bucket"] >= start) & (counts["bucket"] <= self.end)]
        if counts.empty:
            return
        rows = self._rows(counts["key"])
        buckets = counts["bucket"].to_numpy()
        good, total = counts["good"].to_numpy(), counts["total"].to_numpy()
        np.add.at(self.fine[0], (rows, buckets % self.fine_len), good)
        np.add.at(self.fine[1], (rows, buckets % self.fine_len), total)
        coarse_slots = (buckets // COARSE_FACTOR) % self.coarse_len
        np.add.at(self.coarse[0], (rows, coarse_slots), good)
        np.add.at(self.coarse[1], (rows, coarse_slots), total)

    def window_sums(self, lengths: tuple[int, ...]) -> dict[int, tuple[FloatArray, FloatArray]]:
        """length (buckets) -> (good, total) per series over the newest `length` buckets."""
        assert self.end is not None
        n = len(self.keys)
        out: dict[int, tuple[FloatArray, FloatArray]] = {}
        running = np.zeros((2, n), dtype=np.float64)
        done = 0  # newest buckets summed so far: each bucket is read once for all windows
        for length in sorted(lengths):
            length = min(length, self.fine_len)
            if length > done:
                running += self._segment_sum(n, self.end - length + 1, self.end - done)
                done = length
            out[length] = (running[0].copy(), running[1].copy())
        return out

    def _segment_sum(self, n: int, first: int, last: int) -> FloatArray:
        """Sum of fine buckets first..last (absolute, inclusive): at most two ring slices."""
        a, b = first % self.fine_len, last % self.fine_len
        total: FloatArray
        if a <= b:
            total = self.fine[:, :n, a : b + 1].sum(axis=2, dtype=np.float64)
        else:
            total = self.fine[:, :n, a:].sum(axis=2, dtype=np.float64)
            total += self.fine[:, :n, : b + 1].sum(axis=2, dtype=np.float64)
        return total

    def coarse_counts(self) -> pd.DataFrame:
        """(key, bucket, good, total) per coarse bucket over the period, oldest first; buckets
        with no events are left out."""
        assert self.end is not None
        n = len(self.keys)
        newest = self.end // COARSE_FACTOR
        buckets = np.arange(newest - self.coarse_len + 1, newest + 1)
        slots = buckets % self.coarse_len
        good, total = self.coarse[0, :n][:, slots], self.coarse[1, :n][:, slots]
        rows, cols = np.nonzero(total > 0)
        return pd.DataFrame(
            {
                "key": np.asarray(self.keys, dtype=object)[rows],
                "bucket": buckets[cols],
                "good": good[rows, cols],
                "total": total[rows, cols],
            }
        ).sort_values(["key", "bucket"], ignore_index=True)

    def period_sums(self) -> tuple[FloatArray, FloatArray]:
        """(good, total) per series over the period, in whole coarse buckets."""
        n = len(self.keys)
        return self.coarse[0, :n].sum(axis=1), self.coarse[1, :n].sum(axis=1)


def window_sums_reference(
    events: pd.DataFrame, now: float, seconds: float, bucket_seconds: int
) -> pd.DataFrame:
    """The obvious version: sum (key, time, good, total) events in the window's whole buckets."""
    end = math.floor(now / bucket_seconds)
    first = end - window_buckets(seconds, bucket_seconds) + 1
    bucket = np.floor(events["time"] / bucket_seconds)
    inside = events[(bucket >= first) & (bucket <= end)]
    sums: pd.DataFrame = inside.groupby("key")[["good", "total"]].sum()
    return sums
