"""The metric catalogue: every metric rmswatch exports, with type, unit, help, labels and buckets.

A leaf (it imports nothing from rmswatch): the hooks' RMS histogram edges, the exporter, the
alert rules, the Grafana dashboards and `docs/metrics.md` all read from here. Import the constants
(`catalogue.NONFINITE_STEPS_TOTAL.name`) rather than spelling names out.
`python -m rmswatch.generators.metrics_docs --write docs/metrics.md` regenerates the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram", "gaugehistogram"]

PREFIX = "rmswatch_"
# On every series; RunInfo.labels (sanitised) are added after these.
COMMON_LABELS: tuple[str, ...] = ("job", "run_id", "rank")
# Labels the exporter itself uses; a user label with one of these names is renamed `user_<name>`.
RESERVED_LABELS: frozenset[str] = frozenset(
    {*COMMON_LABELS, "layer", "kind", "stat", "group", "le", "quantile", "name", "action"}
    | {"outcome", "optimizer", "host", "world_size", "every", "instance"}
)
EFFECTIVE_LR_STATS: tuple[str, ...] = ("min", "mean", "p50", "p95", "max")
NONFINITE_KINDS: tuple[str, ...] = ("grad", "param", "state", "loss")
# The label values of rmswatch_checkpoints_total; the exporter creates every child at 0.
CHECKPOINT_ACTIONS: tuple[str, ...] = ("save", "load")
CHECKPOINT_OUTCOMES: tuple[str, ...] = ("ok", "failed")
# The label value that collects every layer the cardinality guard does not export by name.
OTHER_LAYERS = "__other__"


def rms_histogram_edges(
    low_exp: int = -10, high_exp: int = 2, per_decade: int = 4
) -> tuple[float, ...]:
    """The fixed, log-spaced edges of every RMS histogram (the same every step and run).

    `per_decade` buckets per power of ten from 10**low_exp to 10**high_exp. Positive values below
    the first edge count in the first bucket, values at or above the last edge in the last one,
    so nothing finite and positive is lost; exact zeros and non-finite values have buckets of
    their own on `Histogram`.
    """
    n = (high_exp - low_exp) * per_decade
    return tuple(10.0 ** (low_exp + i / per_decade) for i in range(n + 1))


RMS_EDGES: tuple[float, ...] = rms_histogram_edges()


# Gauge-histogram bucket bounds. RMS uses the hooks' own fixed edges (an extra `le="0"` bucket
# holds exact zeros); effective LR = lr / (rms + eps) spans more decades, so it gets its own.
RMS_BUCKET_BOUNDS: tuple[float, ...] = (0.0, *RMS_EDGES[1:-1], float("inf"))
EFFECTIVE_LR_EDGES: tuple[float, ...] = rms_histogram_edges(-7, 7, 4)
EFFECTIVE_LR_BUCKET_BOUNDS: tuple[float, ...] = (*EFFECTIVE_LR_EDGES[1:-1], float("inf"))
STEP_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    float("inf"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric. `name` is what PromQL uses (counters end in `_total`)."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    per_layer: bool = False
    system: bool = False

    @property
    def family(self) -> str:
        """The metric family name (a counter's family has no `_total`)."""
        if self.type == "counter":
            return self.name.removesuffix("_total")
        return self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """Every sample name this metric produces on the wire."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        if self.type == "gaugehistogram":
            return (f"{self.name}_bucket", f"{self.name}_gcount", f"{self.name}_gsum")
        return (self.name,)


def _m(
    name: str,
    type_: MetricType,
    help_: str,
    labels: tuple[str, ...] = (),
    *,
    unit: str = "",
    per_layer: bool = False,
    system: bool = False,
) -> MetricSpec:
    layer_labels = ("layer", *labels) if per_layer else labels
    return MetricSpec(PREFIX + name, type_, help_, layer_labels, unit, per_layer, system)


# --- run identity and liveness -------------------------------------------------------------
RUN_INFO = _m(
    "run_info",
    "gauge",
    "Always 1; the labels describe the run (optimizer class, host, world size, cadence).",
    ("optimizer", "host", "world_size", "every"),
)
RUN_START_TIMESTAMP_SECONDS = _m(
    "run_start_timestamp_seconds", "gauge", "Unix time the run started.", unit="seconds"
)
STEPS_TOTAL = _m(
    "steps_total",
    "counter",
    "Optimizer steps taken: the optimizer's step count at the latest telemetry record.",
)
LAST_STEP_TIMESTAMP_SECONDS = _m(
    "last_step_timestamp_seconds",
    "gauge",
    "Unix time of the latest telemetry record (the heartbeat: a stalled run stops moving it).",
    unit="seconds",
)
STEP_DURATION_SECONDS = _m(
    "step_duration_seconds",
    "histogram",
    "Wall time of one training step (optimizer step to optimizer step), per telemetry record.",
    unit="seconds",
)
TELEMETRY_DROPPED_TOTAL = _m(
    "telemetry_dropped_total",
    "counter",
    "Telemetry records dropped because the sink queue was full (training never waits for it).",
)

# --- loss and learning rate ----------------------------------------------------------------
LOSS = _m("loss", "gauge", "Training loss at the latest telemetry step (NaN/Inf are exported).")
VALIDATION_LOSS = _m(
    "validation_loss", "gauge", "Latest validation value, by validation name.", ("name",)
)
LEARNING_RATE = _m("learning_rate", "gauge", "Learning rate of each param group.", ("group",))

# --- global optimizer statistics -----------------------------------------------------------
GRAD_NORM = _m("grad_norm", "gauge", "L2 norm of all gradients at the latest telemetry step.")
PARAM_NORM = _m("param_norm", "gauge", "L2 norm of all parameters at the latest telemetry step.")
UPDATE_NORM = _m(
    "update_norm", "gauge", "L2 norm of the parameter update the optimizer step applied."
)
UPDATE_RATIO = _m(
    "update_ratio", "gauge", "update_norm / param_norm: how far one step moves the weights."
)
EFFECTIVE_LR_STAT = _m(
    "effective_lr_stat",
    "gauge",
    "Statistics of the per-element effective learning rate lr / (sqrt(v) + eps) over all "
    "parameters.",
    ("stat",),
)
NONFINITE_VALUES_TOTAL = _m(
    "nonfinite_values_total",
    "counter",
    "NaN/Inf values seen at telemetry steps, by kind (grad, param, state, loss).",
    ("kind",),
)
NONFINITE_STEPS_TOTAL = _m(
    "nonfinite_steps_total",
    "counter",
    "Telemetry steps at which any gradient, parameter, optimizer state or the loss was NaN/Inf.",
)
# The name the alerting work was first told about; the same metric.
STEP_NONFINITE_TOTAL = NONFINITE_STEPS_TOTAL
STATE_RMS = _m(
    "state_rms",
    "gaugehistogram",
    "Distribution of sqrt(v), the optimizer's RMS state, over every parameter element "
    "(counts at the latest telemetry step).",
)
EFFECTIVE_LR = _m(
    "effective_lr",
    "gaugehistogram",
    "Distribution of the effective learning rate lr / (sqrt(v) + eps) over every parameter "
    "element (counts at the latest telemetry step; bucket resolution, see below).",
)
PARAMETER_TENSORS = _m(
    "parameter_tensors", "gauge", "Parameter tensors the optimizer updates (before any guard)."
)
EXPORTED_LAYERS = _m(
    "exported_layers",
    "gauge",
    'Layers exported by name after the cardinality guard (the rest are in layer="__other__").',
)

# --- per layer (subject to the cardinality guard) ------------------------------------------
LAYER_GRAD_NORM = _m("layer_grad_norm", "gauge", "L2 norm of the layer's gradient.", per_layer=True)
LAYER_PARAM_NORM = _m(
    "layer_param_norm", "gauge", "L2 norm of the layer's parameters.", per_layer=True
)
LAYER_UPDATE_NORM = _m(
    "layer_update_norm", "gauge", "L2 norm of the layer's last update.", per_layer=True
)
LAYER_UPDATE_RATIO = _m(
    "layer_update_ratio", "gauge", "Layer update_norm / param_norm.", per_layer=True
)
LAYER_EFFECTIVE_LR_STAT = _m(
    "layer_effective_lr_stat",
    "gauge",
    "Statistics of the layer's per-element effective learning rate.",
    ("stat",),
    per_layer=True,
)
LAYER_NONFINITE_VALUES_TOTAL = _m(
    "layer_nonfinite_values_total",
    "counter",
    "NaN/Inf values seen in the layer, by kind (grad, param, state); only layers that had any.",
    ("kind",),
    per_layer=True,
)
LAYER_STATE_RMS = _m(
    "layer_state_rms",
    "gaugehistogram",
    "Distribution of the layer's sqrt(v) (counts at the latest telemetry step).",
    per_layer=True,
)
LAYER_EFFECTIVE_LR = _m(
    "layer_effective_lr",
    "gaugehistogram",
    "Distribution of the layer's effective learning rate (counts at the latest telemetry step).",
    per_layer=True,
)

# --- checkpoints -----------------------------------------------------------------------------
CHECKPOINTS_TOTAL = _m(
    "checkpoints_total",
    "counter",
    "Checkpoint saves and loads, by action (save, load) and outcome (ok, failed).",
    ("action", "outcome"),
)
LAST_CHECKPOINT_TIMESTAMP_SECONDS = _m(
    "last_checkpoint_timestamp_seconds",
    "gauge",
    "Unix time of the latest successful checkpoint save or load, by action.",
    ("action",),
    unit="seconds",
)

# --- system (collectors.system) --------------------------------------------------------------
PROCESS_CPU_PERCENT = _m(
    "process_cpu_percent",
    "gauge",
    "CPU used by the training process, percent of one core (above 100 with several threads).",
    system=True,
)
PROCESS_RESIDENT_MEMORY_BYTES = _m(
    "process_resident_memory_bytes",
    "gauge",
    "Resident memory of the training process.",
    unit="bytes",
    system=True,
)
GPUS = _m(
    "gpus",
    "gauge",
    "GPUs the run is using (0 on CPU); integrated over time it gives the run's GPU-hours.",
    system=True,
)
GPU_UTILIZATION_PERCENT = _m(
    "gpu_utilization_percent",
    "gauge",
    "Mean NVML utilisation of the run's GPUs (absent without a GPU).",
    system=True,
)
GPU_MEMORY_USED_BYTES = _m(
    "gpu_memory_used_bytes",
    "gauge",
    "GPU memory in use on the run's GPUs (absent without a GPU).",
    unit="bytes",
    system=True,
)

METRICS: tuple[MetricSpec, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, MetricSpec)
)
# STEP_NONFINITE_TOTAL is an alias: list each metric once.
METRICS = tuple(dict.fromkeys(METRICS))


def sample_names() -> frozenset[str]:
    """Every series name rmswatch can put on the wire (what a PromQL query may name)."""
    return frozenset(name for spec in METRICS for name in spec.series_names)
