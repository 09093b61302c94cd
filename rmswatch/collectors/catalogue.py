"""The metric catalogue: every metric rmswatch exports, with type, unit, help and labels.

The exporter, `docs/metrics.md`, the alert rules and the Grafana dashboards all read from here;
import the constants (`catalogue.NONFINITE_STEPS_TOTAL.name`) rather than spelling names out.
`python -m rmswatch.collectors.catalogue --write docs/metrics.md` regenerates the reference page.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rmswatch.trainer_hooks.records import RMS_EDGES, rms_histogram_edges

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
# The label value that collects every layer the cardinality guard does not export by name.
OTHER_LAYERS = "__other__"

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
            return (f"{self.name}_bucket", f"{self.name}_gcount")
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
BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}


def sample_names() -> frozenset[str]:
    """Every series name rmswatch can put on the wire (what a PromQL query may name)."""
    return frozenset(name for spec in METRICS for name in spec.series_names)


def _fmt_bounds(bounds: tuple[float, ...]) -> str:
    shown = [f"{b:g}" if b != float("inf") else "+Inf" for b in bounds]
    first, last = ", ".join(f"`{b}`" for b in shown[:3]), f"`{shown[-2]}`, `{shown[-1]}`"
    return f"{len(bounds)} buckets: {first}, ... {last}"


_INTRO = """\
# Metrics reference

<!-- Generated by `python -m rmswatch.collectors.catalogue --write docs/metrics.md` from
rmswatch/collectors/catalogue.py (`make docs`). Edit the catalogue, not this file; a test fails
when the two differ. -->

Every metric the in-process exporter (`rmswatch.watch(..., prometheus_port=P)`) serves on
`/metrics`. Every series carries `job`, `run_id` and `rank`, plus the run's own labels
(`watch(labels={...})`) with names sanitised to `[a-zA-Z_][a-zA-Z0-9_]*` (other characters become
`_`, a leading digit gets a `_` prefix, names starting `__` or used by rmswatch itself get a
`user_` prefix). Scrape with `honor_labels: true` so that rmswatch's `job` label is kept (see
`dashboards/prometheus/scrape-config.example.yml`).
"""

_DISTRIBUTIONS = """\
## Distributions: why gauge histograms

The RMS state `sqrt(v)` and the effective learning rate are distributions over millions of
parameter elements *at one step*. They are snapshots, not accumulations: the next step replaces
them. That is exactly OpenMetrics' `gaugehistogram` type, so rmswatch exports them as gauge
histograms rather than as plain gauges with an `le` label:

- PromQL takes quantiles directly:
  `histogram_quantile(0.95, sum by (le) (rmswatch_state_rms_bucket{job="..."}))` (no `rate()`:
  the counts are current, not cumulative).
- Grafana draws a heatmap from `rmswatch_state_rms_bucket` with *Format: Heatmap* (the
  generated debug dashboard does).
- Prometheus negotiates OpenMetrics and stores the type as a gauge histogram. Scraped in the
  classic text format (0.0.4), which has no gauge histogram, the buckets appear as `histogram`
  and the count as a separate `_gcount` gauge; `promtool check metrics` accepts that. Plain
  gauges with an `le` label were the alternative; `promtool check metrics` rejects them
  ("non-histogram metrics should not have \"le\" label"), and they tell PromQL nothing about
  their meaning.
- No `_gsum` is exported: the hooks count values per bucket and do not sum them, and a made-up
  sum would be worse than none. The `*_effective_lr_stat` gauges carry the exact mean.

Bucket bounds (`le`), fixed for every run so that series line up across runs:

- RMS (`*_state_rms_bucket`): `le="0"` holds exact zeros (a parameter that never had a
  gradient), then the hooks' own log edges (4 per decade); values below the first edge count in
  the first bucket, values above the last in `+Inf`. @RMS@.
  Non-finite state values are not in any bucket; they are counted in
  `rmswatch_nonfinite_values_total{kind="state"}`.
- Effective LR (`*_effective_lr_bucket`): 4 per decade from 1e-7 to 1e7. @EFF@. The hooks
  histogram `sqrt(v)`, and `lr / (sqrt(v) + eps)` is monotonic in it, so each RMS bucket is moved
  whole to the effective-LR bucket of its geometric centre (using its param group's `lr` and
  `eps`). The result is accurate to about one bucket (a quarter decade); the exact min, mean,
  p50, p95 and max are in `*_effective_lr_stat`.
"""

_GUARD = """\
## Cardinality guard

A model with thousands of parameter tensors would otherwise export thousands of layers times
~110 buckets. `PrometheusSink` has three knobs, passed from `watch()` as
`rmswatch.watch(..., prometheus_port=P, prometheus_options={"max_layers": 50})`:

- `layer_depth` (default `None`): group parameter tensors by the first N dot-separated parts
  of their name before anything else (`layer_depth=2`: `encoder.layers.3.attn.weight` counts in
  `encoder.layers`). Norms combine exactly (root of the sum of squares), distributions and
  non-finite counts add up, the effective-LR min/max/mean are exact and p50/p95 come from the
  merged distribution. `None` keeps one layer per tensor.
- `max_layers` (default `20`): export at most this many layers by name each scrape: first every
  layer with non-finite values at that step, then the largest gradient norms (a NaN norm ranks
  first). Everything else is merged into `layer="__other__"`, so sums over `layer` stay
  complete. `None` turns the guard off.
- `layer_distributions` (default `True`): export the per-layer RMS and effective-LR gauge
  histograms (about 110 series per exported layer). The global distributions are always
  exported.

With the defaults a 1,000-tensor model exports 21 layers (~2,600 series in all) instead of
~116,000; see `benchmarks/results/prometheus.md` for the scrape times. Because the top-k is
chosen per scrape, a layer that leaves it stops being exported and Prometheus marks its
series stale at once. `rmswatch_layer_nonfinite_values_total` is kept for every layer that ever
had a non-finite value (the `max_layers` with the most, the rest under `__other__`); the
global `rmswatch_nonfinite_values_total` is always the exact total.
"""

_SYSTEM = """\
## System metrics and GPU-hours

`rmswatch.collectors.system.SystemSampler` samples CPU percent and resident memory of the
training process (psutil) and, when NVML (`pip install rmswatch[gpu]`, i.e. `nvidia-ml-py`)
finds a GPU and the process has initialised CUDA, the utilisation and memory of the GPUs the
process can see (`CUDA_VISIBLE_DEVICES` when set, else all). Without a GPU the GPU metrics are
simply absent and `rmswatch_gpus` is 0.

GPU-hours per run are the integral of `SystemSample.gpu_count` over time: the store writer
adds `gpu_count * (time since the previous sample)` to `runs.gpu_seconds`; in PromQL the same
is `sum_over_time(rmswatch_gpus[1h]) * <scrape interval in s> / 3600`. Cost is GPU-hours times
`cost.gpu_hour_usd` in the server config (`rmswatch.config.CostConfig`, default 2.5); a CPU-only
run has no GPU time, and the executive view says so rather than drawing a flat zero.
"""


def render_markdown() -> str:
    """The whole `docs/metrics.md` page, generated from `METRICS`."""
    out = [_INTRO]
    sections = (
        ("Run and training", lambda s: not s.per_layer and not s.system),
        ("Per layer (cardinality-guarded)", lambda s: s.per_layer),
        ("System", lambda s: s.system),
    )
    for title, keep in sections:
        out.append(f"## {title}\n")
        out.append("| Metric | Type | Unit | Labels (besides job, run_id, rank) | Meaning |")
        out.append("|---|---|---|---|---|")
        for spec in METRICS:
            if keep(spec):
                labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
                text = spec.help.replace("|", "\\|")
                out.append(
                    f"| `{spec.name}` | {spec.type} | {spec.unit or '-'} | {labels} | {text} |"
                )
        out.append("")
    out.append(
        _DISTRIBUTIONS.replace("@RMS@", _fmt_bounds(RMS_BUCKET_BOUNDS)).replace(
            "@EFF@", _fmt_bounds(EFFECTIVE_LR_BUCKET_BOUNDS)
        )
    )
    out.append(_GUARD)
    out.append(_SYSTEM)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rmswatch.collectors.catalogue", description=__doc__
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="write the metrics reference page here")
    group.add_argument("--check", metavar="PATH", help="exit 1 when PATH is not up to date")
    args = parser.parse_args(argv)
    page = render_markdown()
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(page, encoding="utf-8")
    elif args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text(encoding="utf-8") != page:
            print(f"{path} is stale: run `make docs`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
