"""/metrics scrape time for a 1,000-tensor model: default cardinality guard vs guard off, and
the custom collector vs prometheus_client labelled Gauge children, side by side in one run.

    python benchmarks/bench_prometheus.py [--tensors 1000] [--scrapes 15]

Each scrape is a real HTTP GET of /metrics after a new StepRecord arrived (as in training, where
records arrive between scrapes, so no rendered snapshot is reused). Also reported: the cost of
`Sink.write()` per record on the sink thread, which runs every telemetry step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, Gauge, start_http_server  # noqa: E402

from rmswatch import catalogue as cat  # noqa: E402
from rmswatch.collectors.prometheus import PrometheusSink, rms_vector  # noqa: E402
from rmswatch.trainer_hooks.records import RMS_EDGES, Histogram, StepRecord  # noqa: E402
from tests.factories import layer, record, run_info  # noqa: E402


def model_record(step: int, tensors: int) -> StepRecord:
    layers = {}
    for i in range(tensors):
        counts = [0] * (len(RMS_EDGES) - 1)
        for b in range(15 + i % 7, 25 + i % 7):  # ten populated buckets, shifting per tensor
            counts[b] = 100 + b + step
        hist = Histogram(RMS_EDGES, tuple(counts), 3, 0, True)
        name = f"encoder.layers.{i // 10}.block{i % 10}.weight"
        layers[name] = layer(float((i * 7919 + step) % 1000) / 10, hist=hist, numel=sum(counts) + 3)
    return record(step=step, layers=layers)


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=60) as response:
        return len(response.read())


class GaugeChildrenExporter:
    """The alternative design: one labelled Gauge child per layer x statistic (x bucket),
    set on every record on the sink thread; the scrape only formats them."""

    def __init__(self, port: int) -> None:
        self.registry = CollectorRegistry()
        labels = ["job", "run_id", "rank", "layer"]
        self.norms = {
            spec.name: Gauge(spec.name, spec.help, labels, registry=self.registry)
            for spec in (cat.LAYER_GRAD_NORM, cat.LAYER_PARAM_NORM, cat.LAYER_UPDATE_NORM,
                         cat.LAYER_UPDATE_RATIO)
        }  # fmt: skip
        self.eff = Gauge(
            cat.LAYER_EFFECTIVE_LR_STAT.name, "h", [*labels, "stat"], registry=self.registry
        )
        # plain gauges with `le` (what promtool rejects); only to compare cost
        self.rms = Gauge(
            "rmswatch_layer_state_rms_le", "h", [*labels, "le"], registry=self.registry
        )
        self.server, self.thread = start_http_server(port, "127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def write(self, rec: StepRecord) -> None:
        base = ("resnet-retrain", "run-1", "0")
        les = [repr(b) for b in cat.RMS_BUCKET_BOUNDS]
        for name, stats in rec.layers.items():
            self.norms[cat.LAYER_GRAD_NORM.name].labels(*base, name).set(stats.grad_norm)
            self.norms[cat.LAYER_PARAM_NORM.name].labels(*base, name).set(stats.param_norm)
            self.norms[cat.LAYER_UPDATE_NORM.name].labels(*base, name).set(stats.update_norm)
            self.norms[cat.LAYER_UPDATE_RATIO.name].labels(*base, name).set(stats.update_ratio)
            for stat, value in (("min", stats.eff_lr_min), ("mean", stats.eff_lr_mean),
                                ("p50", stats.eff_lr_p50), ("p95", stats.eff_lr_p95),
                                ("max", stats.eff_lr_max)):  # fmt: skip
                self.eff.labels(*base, name, stat).set(value or 0.0)
            if stats.rms_hist is not None:
                cumulative = rms_vector(stats.rms_hist).cumsum().tolist()
                for le, count in zip(les, cumulative, strict=True):
                    self.rms.labels(*base, name, le).set(count)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def measure(write, url: str, tensors: int, scrapes: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    records = [model_record(step, tensors) for step in range(scrapes + 1)]
    write(records[0])
    get(url)  # warm-up
    write_s, scrape_s, size = [], [], 0
    for rec in records[1:]:
        start = time.perf_counter()
        write(rec)
        write_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        size = get(url)
        scrape_s.append(time.perf_counter() - start)
    text = urllib.request.urlopen(url, timeout=60).read().decode()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {
        "scrape_ms": statistics.median(scrape_s) * 1e3,
        "write_ms": statistics.median(write_s) * 1e3,
        "bytes": size,
        "series": series,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tensors", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    variants = {
        "custom collector, default guard (max_layers=20)": {},
        "custom collector, guard + layer_depth=3": {"layer_depth": 3},
        "custom collector, guard off (max_layers=None)": {"max_layers": None},
    }
    for title, knobs in variants.items():
        sink = PrometheusSink(port=0, **knobs)  # type: ignore[arg-type]
        sink.open(run_info())
        try:
            results[title] = measure(
                lambda rec, sink=sink: sink.write([rec]), sink.url, args.tensors, args.scrapes
            )
        finally:
            sink.close()
    gauges = GaugeChildrenExporter(0)
    try:
        results["labelled Gauge children, no guard (scalars + RMS buckets only)"] = measure(
            gauges.write, gauges.url, args.tensors, args.scrapes
        )
    finally:
        gauges.close()
    base = results["custom collector, default guard (max_layers=20)"]["scrape_ms"]
    print(f"{args.tensors} parameter tensors, median of {args.scrapes} scrapes "
          f"(Python {platform.python_version()}, {platform.machine()})\n")  # fmt: skip
    header = "| Exporter | /metrics scrape (median) | vs default | Sink.write per record |"
    print(header + " series | bytes |")
    print("|---|---|---|---|---|---|")
    for title, r in results.items():
        print(
            f"| {title} | {r['scrape_ms']:.1f} ms | {r['scrape_ms'] / base:.1f}x | "
            f"{r['write_ms']:.3f} ms | {int(r['series']):,} | {int(r['bytes']):,} |"
        )


if __name__ == "__main__":
    main()
