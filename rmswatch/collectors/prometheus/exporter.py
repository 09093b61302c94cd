"""The in-process Prometheus exporter: a Sink that keeps the latest telemetry and serves /metrics.

`write()` (on the monitor's sink thread) only stores the newest record and adds to counters; the
`RunCollector` renders metric families from that snapshot when Prometheus scrapes, applying the
cardinality guard (`guard.py`). Metric names, types and help come from
`rmswatch.catalogue`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from rmswatch import catalogue as cat
from rmswatch._validation import ArgumentError
from rmswatch.collectors.prometheus.guard import DEFAULT_MAX_LAYERS, guard_layers, layer_key
from rmswatch.collectors.prometheus.labels import run_labels
from rmswatch.trainer_hooks.records import (
    CheckpointRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    Telemetry,
    ValidationRecord,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

_LAYER_KINDS = ("grad", "param", "state")


def _le(bound: float) -> str:
    # The same spelling prometheus_client uses for its own histograms (`+Inf`, `0.005`).
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _centres(bounds: Sequence[float]) -> FloatArray:
    """Where each bucket's values are taken to lie for `_gsum`: the geometric centre.

    The first bucket (from 0) counts at its upper bound, `+Inf` at the last finite bound: the
    same assumption the effective-LR vectors make (distributions.py).
    """
    centres, lower = [], 0.0
    for upper in bounds:
        if math.isinf(upper):
            centres.append(lower)
        elif lower <= 0:
            centres.append(float(upper))
        else:
            centres.append(math.sqrt(lower * upper))
        lower = float(upper)
    return np.array(centres, dtype=np.float64)


_RMS_LE = tuple(_le(b) for b in cat.RMS_BUCKET_BOUNDS)
_EFF_LE = tuple(_le(b) for b in cat.EFFECTIVE_LR_BUCKET_BOUNDS)
_RMS_CENTRES = _centres(cat.RMS_BUCKET_BOUNDS)
_EFF_CENTRES = _centres(cat.EFFECTIVE_LR_BUCKET_BOUNDS)
_DURATION_LE = tuple(_le(b) for b in cat.STEP_DURATION_BUCKETS)


class _Families:
    """Builds prometheus_client Metric objects for one scrape, with shared base labels."""

    def __init__(self, base: dict[str, str]) -> None:
        self.base = base
        self.out: dict[str, Metric] = {}

    def family(self, spec: cat.MetricSpec) -> Metric:
        metric = self.out.get(spec.name)
        if metric is None:
            metric = Metric(spec.family, spec.help, spec.type, spec.unit)
            self.out[spec.name] = metric
        return metric

    def add(self, spec: cat.MetricSpec, value: float, **labels: str) -> None:
        name = spec.name
        self.family(spec).samples.append(
            Sample(name, {**self.base, **labels} if labels else self.base, float(value))
        )

    def buckets(
        self,
        spec: cat.MetricSpec,
        counts: FloatArray,
        le: tuple[str, ...],
        centres: FloatArray,
        **labels: str,
    ) -> None:
        """A gauge histogram: cumulative buckets, `_gcount`, and `_gsum` estimated from centres.

        OpenMetrics allows `_gcount` only beside `_gsum` (strict parsers reject the scrape
        otherwise); the hooks count values per bucket without summing them, so the sum is the
        bucket-centre estimate, within a bucket's width per value.
        """
        metric = self.family(spec)
        cumulative = np.cumsum(counts).tolist()
        labelled = {**self.base, **labels}
        bucket = spec.name + "_bucket"
        metric.samples.extend(
            Sample(bucket, {**labelled, "le": b}, c) for b, c in zip(le, cumulative, strict=True)
        )
        metric.samples.append(Sample(spec.name + "_gcount", labelled, cumulative[-1]))
        metric.samples.append(Sample(spec.name + "_gsum", labelled, float(counts @ centres)))


class RunCollector:
    """A prometheus_client collector that renders the latest telemetry of one run.

    Thread-safe: `update()` runs on the sink thread, `collect()` on the HTTP server's.
    """

    def __init__(
        self,
        *,
        layer_depth: int | None = None,
        max_layers: int | None = DEFAULT_MAX_LAYERS,
        layer_distributions: bool = True,
    ) -> None:
        if layer_depth is not None and (not isinstance(layer_depth, int) or layer_depth < 1):
            raise ArgumentError(f"layer_depth={layer_depth!r}: expected None or an integer >= 1")
        if max_layers is not None and (not isinstance(max_layers, int) or max_layers < 0):
            raise ArgumentError(
                f"max_layers={max_layers!r}: expected None (no limit) or an int >= 0"
            )
        self.layer_depth = layer_depth
        self.max_layers = max_layers
        self.layer_distributions = bool(layer_distributions)
        self._lock = threading.Lock()
        self._run: RunInfo | None = None
        self._base: dict[str, str] = {}
        self._latest: StepRecord | None = None
        # Budget mode: most records are sentinel-only (no layers, NaN parameter norms); the
        # norms, eff-LR and per-layer series come from the newest full record.
        self._latest_full: StepRecord | None = None
        self._system: SystemSample | None = None
        self._validation: dict[str, float] = {}
        self._nonfinite = dict.fromkeys(cat.NONFINITE_KINDS, 0)
        self._nonfinite_steps = 0
        self._layer_nonfinite: dict[str, list[int]] = {}
        self._durations = [0] * len(cat.STEP_DURATION_BUCKETS)
        self._duration_sum = 0.0
        self._duration_count = 0
        # Every child exists at 0 from the first scrape: a series born at 1 hides its first
        # increase from increase()/rate() ("avoid missing metrics").
        self._checkpoints: dict[tuple[str, str], int] = {
            (action, outcome): 0
            for action in cat.CHECKPOINT_ACTIONS
            for outcome in cat.CHECKPOINT_OUTCOMES
        }
        self._last_checkpoint: dict[str, float] = {}
        self._version = 0
        self._cache: tuple[int, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        # Lets the registry reject a second exporter with the same names without collecting.
        return [Metric(spec.family, spec.help, spec.type, spec.unit) for spec in cat.METRICS]

    def set_run(self, run: RunInfo) -> None:
        with self._lock:
            self._run = run
            self._base = run_labels(run)
            self._version += 1

    def update(self, items: Iterable[Telemetry]) -> None:
        """Take a batch of telemetry (cheap: counters and a reference to the newest record)."""
        with self._lock:
            for item in items:
                if isinstance(item, StepRecord):
                    self._take_step(item)
                elif isinstance(item, SystemSample):
                    self._system = item
                elif isinstance(item, ValidationRecord):
                    self._validation[item.name] = item.value
                elif isinstance(item, CheckpointRecord):
                    outcome = "ok" if item.ok else "failed"
                    key = (item.action, outcome)
                    self._checkpoints[key] = self._checkpoints.get(key, 0) + 1
                    if item.ok:
                        self._last_checkpoint[item.action] = item.time
            self._version += 1

    def _take_step(self, record: StepRecord) -> None:
        if self._latest is None or record.step >= self._latest.step:
            self._latest = record
        if record.full and (self._latest_full is None or record.step >= self._latest_full.step):
            self._latest_full = record
        any_nonfinite = False
        for kind in cat.NONFINITE_KINDS:
            count = int(record.nonfinite.get(kind, 0))
            if count:
                self._nonfinite[kind] += count
                any_nonfinite = True
        if record.loss is not None and not math.isfinite(record.loss):
            any_nonfinite = True
            if not record.nonfinite.get("loss", 0):
                self._nonfinite["loss"] += 1
        if any_nonfinite:
            self._nonfinite_steps += 1
        if any(record.nonfinite.get(k, 0) for k in _LAYER_KINDS):
            # Only walk the layers when something is non-finite: the common step stays O(1).
            for name, stats in record.layers.items():
                counts = (stats.nonfinite_grad, stats.nonfinite_param, stats.nonfinite_state)
                if any(counts):
                    totals = self._layer_nonfinite.setdefault(name, [0, 0, 0])
                    for i, c in enumerate(counts):
                        totals[i] += int(c)
        seconds = record.step_seconds
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            self._durations[bisect.bisect_left(cat.STEP_DURATION_BUCKETS, seconds)] += 1
            self._duration_sum += seconds
            self._duration_count += 1
        if record.validation is not None:
            self._validation["val_loss"] = record.validation

    def collect(self) -> list[Metric]:
        with self._lock:
            if self._cache is not None and self._cache[0] == self._version:
                return self._cache[1]
            version = self._version
            state = (
                self._run,
                dict(self._base),
                (self._latest, self._latest_full),
                self._system,
                dict(self._validation),
                dict(self._nonfinite),
                self._nonfinite_steps,
                {k: list(v) for k, v in self._layer_nonfinite.items()},
                (list(self._durations), self._duration_sum, self._duration_count),
                dict(self._checkpoints),
                dict(self._last_checkpoint),
            )
        families = self._render(*state)
        with self._lock:
            self._cache = (version, families)
        return families

    def _render(
        self,
        run: RunInfo | None,
        base: dict[str, str],
        latest_pair: tuple[StepRecord | None, StepRecord | None],
        system: SystemSample | None,
        validation: dict[str, float],
        nonfinite: dict[str, int],
        nonfinite_steps: int,
        layer_nonfinite: dict[str, list[int]],
        durations: tuple[list[int], float, int],
        checkpoints: dict[tuple[str, str], int],
        last_checkpoint: dict[str, float],
    ) -> list[Metric]:
        if run is None:
            return []
        latest, latest_full = latest_pair
        f = _Families(base)
        f.add(
            cat.RUN_INFO,
            1.0,
            optimizer=run.optimizer,
            host=run.host,
            world_size=str(run.world_size),
            every=str(run.every),
        )
        f.add(cat.RUN_START_TIMESTAMP_SECONDS, run.started_at)
        tensors = len(run.layers) or (len(latest.layers) if latest else 0)
        f.add(cat.PARAMETER_TENSORS, tensors)
        for kind in cat.NONFINITE_KINDS:
            f.add(cat.NONFINITE_VALUES_TOTAL, nonfinite[kind], kind=kind)
        f.add(cat.NONFINITE_STEPS_TOTAL, nonfinite_steps)
        self._render_durations(f, *durations)
        for name, value in sorted(validation.items()):
            f.add(cat.VALIDATION_LOSS, value, name=name)
        for (action, outcome), count in sorted(checkpoints.items()):
            f.add(cat.CHECKPOINTS_TOTAL, count, action=action, outcome=outcome)
        for action, when in sorted(last_checkpoint.items()):
            f.add(cat.LAST_CHECKPOINT_TIMESTAMP_SECONDS, when, action=action)
        if system is not None:
            f.add(cat.PROCESS_CPU_PERCENT, system.cpu_percent)
            f.add(cat.PROCESS_RESIDENT_MEMORY_BYTES, system.rss_bytes)
            f.add(cat.GPUS, system.gpu_count)
            if system.gpu_util_percent is not None:
                f.add(cat.GPU_UTILIZATION_PERCENT, system.gpu_util_percent)
            if system.gpu_memory_bytes is not None:
                f.add(cat.GPU_MEMORY_USED_BYTES, system.gpu_memory_bytes)
        if latest is not None:
            self._render_step(f, run, latest, latest_full)
        self._render_layer_nonfinite(f, layer_nonfinite)
        return list(f.out.values())

    def _render_durations(self, f: _Families, counts: list[int], total: float, n: int) -> None:
        metric = f.family(cat.STEP_DURATION_SECONDS)
        name = cat.STEP_DURATION_SECONDS.name
        cumulative = np.cumsum(counts).tolist()
        metric.samples.extend(
            Sample(name + "_bucket", {**f.base, "le": le}, float(c))
            for le, c in zip(_DURATION_LE, cumulative, strict=True)
        )
        metric.samples.append(Sample(name + "_count", f.base, float(n)))
        metric.samples.append(Sample(name + "_sum", f.base, total))

    def _render_step(
        self, f: _Families, run: RunInfo, latest: StepRecord, full: StepRecord | None
    ) -> None:
        f.add(cat.STEPS_TOTAL, latest.step)
        f.add(cat.LAST_STEP_TIMESTAMP_SECONDS, latest.time)
        f.add(cat.TELEMETRY_DROPPED_TOTAL, latest.dropped_total)
        if latest.loss is not None:
            f.add(cat.LOSS, latest.loss)
        for group, lr in enumerate(latest.lrs or (latest.lr,)):
            f.add(cat.LEARNING_RATE, lr, group=str(group))
        f.add(cat.GRAD_NORM, latest.grad_norm)
        if full is None:
            return
        record = full
        f.add(cat.PARAM_NORM, record.param_norm)
        f.add(cat.UPDATE_NORM, record.update_norm)
        f.add(cat.UPDATE_RATIO, record.update_ratio)
        global_stats = (
            record.eff_lr_min,
            record.eff_lr_mean,
            record.eff_lr_p50,
            record.eff_lr_p95,
            record.eff_lr_max,
        )
        for stat, value in zip(cat.EFFECTIVE_LR_STATS, global_stats, strict=True):
            if value is not None:
                f.add(cat.EFFECTIVE_LR_STAT, value, stat=stat)
        guarded, global_dists = guard_layers(
            record,
            run,
            layer_depth=self.layer_depth,
            max_layers=self.max_layers,
            distributions=self.layer_distributions,
        )
        if global_dists is not None:
            f.buckets(cat.STATE_RMS, global_dists[0], _RMS_LE, _RMS_CENTRES)
            f.buckets(cat.EFFECTIVE_LR, global_dists[1], _EFF_LE, _EFF_CENTRES)
        exported = [*guarded.layers, *([guarded.other] if guarded.other else [])]
        f.add(cat.EXPORTED_LAYERS, len(guarded.layers))
        for view in exported:
            layer = view.name
            f.add(cat.LAYER_GRAD_NORM, view.grad_norm, layer=layer)
            f.add(cat.LAYER_PARAM_NORM, view.param_norm, layer=layer)
            f.add(cat.LAYER_UPDATE_NORM, view.update_norm, layer=layer)
            f.add(cat.LAYER_UPDATE_RATIO, view.update_ratio, layer=layer)
            for stat in cat.EFFECTIVE_LR_STATS:
                if stat in view.eff_lr:
                    f.add(cat.LAYER_EFFECTIVE_LR_STAT, view.eff_lr[stat], layer=layer, stat=stat)
            if view.rms is not None and view.eff is not None:
                f.buckets(cat.LAYER_STATE_RMS, view.rms, _RMS_LE, _RMS_CENTRES, layer=layer)
                f.buckets(cat.LAYER_EFFECTIVE_LR, view.eff, _EFF_LE, _EFF_CENTRES, layer=layer)

    def _render_layer_nonfinite(self, f: _Families, totals: dict[str, list[int]]) -> None:
        if not totals:
            return
        grouped: dict[str, list[int]] = {}
        for name, counts in totals.items():
            into = grouped.setdefault(layer_key(name, self.layer_depth), [0, 0, 0])
            for i, c in enumerate(counts):
                into[i] += c
        names = sorted(grouped, key=lambda k: (-sum(grouped[k]), k))
        if self.max_layers is not None and len(names) > self.max_layers:
            rest = [0, 0, 0]
            for name in names[self.max_layers :]:
                for i, c in enumerate(grouped.pop(name)):
                    rest[i] += c
            names = names[: self.max_layers]
            grouped[cat.OTHER_LAYERS] = rest
            names.append(cat.OTHER_LAYERS)
        for name in names:
            for kind, count in zip(_LAYER_KINDS, grouped[name], strict=True):
                f.add(cat.LAYER_NONFINITE_VALUES_TOTAL, count, layer=name, kind=kind)


class PrometheusSink:
    """Serves `/metrics` for one run from the training process (a `Sink`).

    The HTTP server starts in the constructor (so a port in use fails at `watch()`), on `host`
    (127.0.0.1 unless told otherwise); `port=0` picks a free port, readable as `.port`.
    `registry` defaults to a fresh `CollectorRegistry`, never the process-global one.
    Cardinality guard (see docs/metrics.md): `layer_depth` groups tensors by module prefix,
    `max_layers` exports that many layers by name (None: no limit), `layer_distributions`
    turns the per-layer gauge histograms off.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        registry: CollectorRegistry | None = None,
        *,
        layer_depth: int | None = None,
        max_layers: int | None = DEFAULT_MAX_LAYERS,
        layer_distributions: bool = True,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ArgumentError(f"port={port!r}: expected an integer 0-65535 (0 picks a free port)")
        self.collector = RunCollector(
            layer_depth=layer_depth,
            max_layers=max_layers,
            layer_distributions=layer_distributions,
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self.collector)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except BaseException:
            self.registry.unregister(self.collector)
            raise
        self.host = host
        self.port: int = int(self._server.server_address[1])
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def open(self, run: RunInfo) -> None:
        self.collector.set_run(run)

    def write(self, items: Sequence[Telemetry]) -> None:
        self.collector.update(items)

    def flush(self) -> None:
        """Nothing is buffered: every write is visible to the next scrape."""

    def close(self, status: RunStatus | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.registry.unregister(self.collector)

    def __enter__(self) -> PrometheusSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def exported_series(families: Iterable[Metric]) -> Iterator[Sample]:
    """Every sample of a collection (a test and benchmark helper)."""
    for family in families:
        yield from family.samples
