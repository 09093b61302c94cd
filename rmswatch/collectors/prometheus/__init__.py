"""The in-process Prometheus exporter (`exporter`), its cardinality guard (`guard`) and the
bucket vectors it exports (`distributions`)."""

from __future__ import annotations

from rmswatch.collectors.prometheus.distributions import (
    effective_lr_vector,
    quantile_from_buckets,
    rms_vector,
)
from rmswatch.collectors.prometheus.exporter import (
    PrometheusSink,
    RunCollector,
    exported_series,
)
from rmswatch.collectors.prometheus.guard import (
    DEFAULT_MAX_LAYERS,
    GuardedLayers,
    LayerView,
    guard_layers,
)
from rmswatch.collectors.prometheus.labels import run_labels, sanitize_label_name

__all__ = [
    "DEFAULT_MAX_LAYERS",
    "GuardedLayers",
    "LayerView",
    "PrometheusSink",
    "RunCollector",
    "effective_lr_vector",
    "exported_series",
    "guard_layers",
    "quantile_from_buckets",
    "rms_vector",
    "run_labels",
    "sanitize_label_name",
]
