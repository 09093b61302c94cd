"""The every-step sentinel and the telemetry budget (docs/hooks.md, "Modes").

The sentinel costs one `torch._foreach_norm` over the gradients per step: the global gradient
norm and its finiteness, with the loss. `Cadence` decides which steps get full telemetry: a
fixed `every`, or the overhead budget, which measures what a full step costs against a plain
one and spaces full steps so that their amortised cost stays within it. `AnomalyDetector`
turns a non-finite value or a spike into a full record at that step.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rmswatch.trainer_hooks.packing import Slot

DEFAULT_OVERHEAD = 0.03
DEFAULT_MAX_INTERVAL = 1000


class RunningMedian:
    """Median of the last `size` values added (a sorted window; O(size) per add)."""

    def __init__(self, size: int) -> None:
        self._window: deque[float] = deque()
        self._sorted: list[float] = []
        self._size = size

    def __len__(self) -> int:
        return len(self._window)

    def add(self, value: float) -> None:
        self._window.append(value)
        bisect.insort(self._sorted, value)
        if len(self._window) > self._size:
            old = self._window.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    @property
    def median(self) -> float:
        n = len(self._sorted)
        if not n:
            return math.nan
        mid = n // 2
        return self._sorted[mid] if n % 2 else 0.5 * (self._sorted[mid - 1] + self._sorted[mid])


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the sentinel calls a step anomalous (and so gives it a full record).

    Always: a non-finite global gradient norm or loss. `grad_spike`: the gradient norm exceeds
    this many times the median of the previous `window` finite norms. `loss_spike`: a positive
    loss exceeds this many times the median of the previous `window` finite losses. A spike
    needs at least `warmup` earlier values; None turns that check off.
    """

    grad_spike: float | None = 10.0
    loss_spike: float | None = 3.0
    window: int = 50
    warmup: int = 10

    def __post_init__(self) -> None:
        for name in ("grad_spike", "loss_spike"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 1):
                raise ValueError(f"{name}={value!r}: expected None or a number > 1")
        for name in ("window", "warmup"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an integer >= 1")


class AnomalyDetector:
    """Host-side verdicts on the sentinel's values, one step at a time."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._grad = RunningMedian(thresholds.window)
        self._loss = RunningMedian(thresholds.window)

    def grad(self, norm: float) -> str | None:
        """ "nonfinite", "grad_spike" or None for this step's global gradient norm."""
        return self._check(norm, self._grad, self.thresholds.grad_spike, "grad_spike")

    def loss(self, loss: float) -> str | None:
        """ "nonfinite", "loss_spike" or None for this step's loss."""
        return self._check(loss, self._loss, self.thresholds.loss_spike, "loss_spike")

    def _check(
        self, value: float, window: RunningMedian, factor: float | None, name: str
    ) -> str | None:
        if not math.isfinite(value):
            return "nonfinite"
        verdict = None
        if factor is not None and len(window) >= self.thresholds.warmup:
            median = window.median
            if median > 0 and value > factor * median:
                verdict = name
        window.add(value)
        return verdict


class Sentinel:
    """The global gradient norm of every dense gradient: one `_foreach_norm` per dtype group."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.slots = list(slots)

    @torch.no_grad()
    def grad_norm(self) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]]]:
        """(0-d float64 global norm on the device, or None without gradients; the (parameter,
        gradient) pairs it read). Sparse gradients are left out (RMSprop refuses them)."""
        pairs = [
            (s.param, g) for s in self.slots if (g := s.param.grad) is not None and not g.is_sparse
        ]
        if not pairs:
            return None, pairs
        wide: list[torch.Tensor] = []
        narrow: list[torch.Tensor] = []
        for _, g in pairs:
            (wide if g.dtype == torch.float64 else narrow).append(g)
        parts: list[torch.Tensor] = []
        if wide:
            parts.append(torch.stack(torch._foreach_norm(wide)))
        if narrow:  # float16/bfloat16 norms would overflow in their own dtype
            parts.append(torch.stack(torch._foreach_norm(narrow, 2, dtype=torch.float32)))
        norms = parts[0].double() if len(parts) == 1 else torch.cat([t.double() for t in parts])
        return torch.linalg.vector_norm(norms), pairs


class Cadence:
    """Which steps get full telemetry: a fixed `every`, or the overhead budget.

    Budget mode: step 1 is full. After each step the monitor reports the bare iteration time
    (the step's wall time minus the time spent in rmswatch) and what the step cost rmswatch.
    A full step costs `extra` more than a sentinel-only one (exact-distribution steps averaged
    in at their cadence); with `allow = overhead * bare - sentinel` seconds per step to spend,
    full steps come every `ceil(extra / allow)` steps, at most every `max_interval`.
    """

    def __init__(
        self,
        every: int | None,
        overhead: float = DEFAULT_OVERHEAD,
        *,
        exact_every: int = 1,
        max_interval: int = DEFAULT_MAX_INTERVAL,
    ) -> None:
        if not (isinstance(overhead, int | float) and 0 < overhead and math.isfinite(overhead)):
            raise ValueError(f"overhead={overhead!r}: expected a fraction > 0 (0.03 = 3%)")
        if not isinstance(max_interval, int) or isinstance(max_interval, bool) or max_interval < 1:
            raise ValueError(f"max_interval={max_interval!r}: expected an integer >= 1")
        self.every = every
        self.overhead = float(overhead)
        self.exact_every = exact_every
        self.max_interval = max_interval
        self._bare = RunningMedian(32)
        self._sentinel = RunningMedian(32)
        self._sampled = RunningMedian(8)
        self._exact = RunningMedian(4)
        self._last_full = 0
        # Budget mode starts at every other step, so that both kinds of step get measured.
        self.interval = 2 if every is None else every
        self.full_steps = 0

    @property
    def budgeted(self) -> bool:
        """True in budget mode, where every other step still gets a sentinel record."""
        return self.every is None

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based) is a scheduled full-telemetry step."""
        if self.every is not None:
            return (step - 1) % self.every == 0
        return self._last_full == 0 or step - self._last_full >= self.interval

    def took_full(self, step: int) -> None:
        self._last_full = step
        self.full_steps += 1

    def observe(self, bare: float, cost: float, *, full: bool, exact: bool, first: bool) -> None:
        """One completed step: its bare iteration seconds and what rmswatch spent on it."""
        if self.every is not None or first:  # the first full step pays one-time warm-up
            return
        if bare > 0:
            self._bare.add(bare)
        (self._exact if exact else self._sampled if full else self._sentinel).add(cost)
        self.interval = self._interval()

    def _interval(self) -> int:
        bare, sentinel = self._bare.median, self._sentinel.median
        sampled, exact = self._sampled.median, self._exact.median
        if math.isnan(sampled):
            sampled = exact
        if math.isnan(exact):
            exact = sampled
        if any(math.isnan(x) for x in (bare, sentinel, sampled)):
            return self.interval
        extra = (sampled - sentinel) + (exact - sampled) / self.exact_every
        if extra <= 0:
            return 1
        allow = self.overhead * bare - sentinel
        if allow <= 0:
            return self.max_interval
        return max(1, min(self.max_interval, math.ceil(extra / allow)))
