"""Grafana dashboards (executive, on-call, debug) generated from the metric catalogue.

`python -m rmswatch.generators.grafana --write dashboards/grafana` regenerates the checked-in
JSON (Grafana 10+ schema, a Prometheus datasource variable, `job` and `run_id` variables);
`--check` exits 1 when it is stale. Every query names metrics through `catalogue` constants;
the panel and dashboard JSON model is `grafana_model`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rmswatch import catalogue as cat
from rmswatch.config import CostConfig
from rmswatch.generators.grafana_model import DATASOURCE, Panel, Query, dashboard
from rmswatch.generators.grafana_model import sel as sel


# GPU-hours: a 1-minute subquery makes each point stand for one minute, whatever the scrape
# interval, so the sum over a window divided by 60 is the integral of rmswatch_gpus in hours.
def _gpu_hours(window: str, by: str = "job") -> str:
    return f"sum by ({by}) (sum_over_time({sel(cat.GPUS)}[{window}:1m])) / 60"


def executive() -> dict[str, Any]:
    cost = {
        "type": "constant",
        "name": "gpu_hour_usd",
        "label": "USD per GPU-hour",
        "query": f"{CostConfig().gpu_hour_usd:g}",
        "hide": 2,
    }
    panels = [
        Panel(
            "Runs reporting",
            "stat",
            [Query(f"count({sel(cat.RUN_INFO)}) or vector(0)", instant=True)],
            "Runs whose exporter Prometheus is scraping now.",
            width=6,
        ),
        Panel(
            "GPUs in use",
            "stat",
            [Query(f"sum({sel(cat.GPUS)}) or vector(0)", instant=True)],
            width=6,
        ),
        Panel(
            "GPU-hours (24 h)",
            "stat",
            [Query(f"sum({_gpu_hours('24h')}) or vector(0)", instant=True)],
            "Integral of rmswatch_gpus over the last day.",
            width=6,
        ),
        Panel(
            "Spend (24 h, USD)",
            "stat",
            [Query(f"(sum({_gpu_hours('24h')}) or vector(0)) * $gpu_hour_usd", instant=True)],
            "GPU-hours x cost.gpu_hour_usd (default from rmswatch.config.CostConfig).",
            unit="currencyUSD",
            width=6,
        ),
        Panel(
            "GPU-hours per job (rolling 24 h)",
            "timeseries",
            [Query(_gpu_hours("24h"), "{{job}}")],
        ),
        Panel(
            "Training throughput (steps/s)",
            "timeseries",
            [Query(f"sum by (job) (rate({sel(cat.STEPS_TOTAL)}[5m]))", "{{job}}")],
        ),
        Panel(
            "Steps with NaN/Inf (per hour)",
            "timeseries",
            [Query(f"sum by (job) (increase({sel(cat.NONFINITE_STEPS_TOTAL)}[1h]))", "{{job}}")],
            thresholds=((0, "green"), (1, "red")),
        ),
        Panel(
            "Latest loss per run",
            "timeseries",
            [Query(sel(cat.LOSS), "{{job}} {{run_id}}")],
            log_scale=True,
        ),
    ]
    return dashboard(
        "rmswatch-executive",
        "rmswatch / Executive",
        "Training fleet at a glance: runs, throughput, health, GPU-hours and spend.",
        panels,
        variables=[cost],
    )


def oncall() -> dict[str, Any]:
    panels = [
        Panel(
            "Seconds since last step",
            "stat",
            [
                Query(
                    f"time() - max by (job, run_id) ({sel(cat.LAST_STEP_TIMESTAMP_SECONDS)})",
                    "{{job}} {{run_id}}",
                    instant=True,
                )
            ],
            "The heartbeat: a stalled run stops moving rmswatch_last_step_timestamp_seconds.",
            unit="s",
            width=8,
            thresholds=((0, "green"), (120, "orange"), (600, "red")),
        ),
        Panel(
            "Non-finite values (5 m)",
            "stat",
            [
                Query(
                    f"sum(increase({sel(cat.NONFINITE_VALUES_TOTAL)}[5m])) or vector(0)",
                    instant=True,
                )
            ],
            width=8,
            thresholds=((0, "green"), (1, "red")),
        ),
        Panel(
            "Telemetry dropped (1 h)",
            "stat",
            [
                Query(
                    f"sum(increase({sel(cat.TELEMETRY_DROPPED_TOTAL)}[1h])) or vector(0)",
                    instant=True,
                )
            ],
            width=8,
            thresholds=((0, "green"), (1, "orange")),
        ),
        Panel(
            "Loss and validation",
            "timeseries",
            [
                Query(sel(cat.LOSS), "loss {{run_id}}"),
                Query(sel(cat.VALIDATION_LOSS), "{{name}} {{run_id}}"),
            ],
            log_scale=True,
        ),
        Panel(
            "Gradient norm",
            "timeseries",
            [Query(sel(cat.GRAD_NORM), "{{run_id}}")],
            log_scale=True,
        ),
        Panel(
            "NaN/Inf values by kind (per 5 m)",
            "timeseries",
            [
                Query(
                    f"sum by (run_id, kind) (increase({sel(cat.NONFINITE_VALUES_TOTAL)}[5m]))",
                    "{{run_id}} {{kind}}",
                )
            ],
        ),
        Panel(
            "Layers with NaN/Inf (top 10)",
            "table",
            [
                Query(
                    f"topk(10, sum by (run_id, layer) ({sel(cat.LAYER_NONFINITE_VALUES_TOTAL)}))",
                    "{{layer}}",
                    instant=True,
                )
            ],
        ),
        Panel(
            "Step duration p50 / p95",
            "timeseries",
            [
                Query(
                    f"histogram_quantile({q}, sum by (le, run_id) "
                    f"(rate({sel(cat.STEP_DURATION_SECONDS, '_bucket')}[5m])))",
                    f"p{int(q * 100)} {{{{run_id}}}}",
                )
                for q in (0.5, 0.95)
            ],
            unit="s",
        ),
        Panel(
            "Update ratio (update / param norm)",
            "timeseries",
            [Query(sel(cat.UPDATE_RATIO), "{{run_id}}")],
            log_scale=True,
        ),
        Panel(
            "Process CPU and GPU utilisation",
            "timeseries",
            [
                Query(sel(cat.PROCESS_CPU_PERCENT), "cpu {{run_id}}"),
                Query(sel(cat.GPU_UTILIZATION_PERCENT), "gpu {{run_id}}"),
            ],
            unit="percent",
        ),
        Panel(
            "Memory",
            "timeseries",
            [
                Query(sel(cat.PROCESS_RESIDENT_MEMORY_BYTES), "rss {{run_id}}"),
                Query(sel(cat.GPU_MEMORY_USED_BYTES), "gpu {{run_id}}"),
            ],
            unit="bytes",
        ),
    ]
    return dashboard(
        "rmswatch-oncall",
        "rmswatch / On-call",
        "Is the run alive, finite and moving? Heartbeat, NaN/Inf, loss, gradients, step time.",
        panels,
    )


def debug() -> dict[str, Any]:
    layer = 'layer=~"$layer"'
    layer_var = {
        "type": "query",
        "name": "layer",
        "label": "layer",
        "datasource": DATASOURCE,
        "definition": f'label_values({cat.LAYER_GRAD_NORM.name}{{run_id=~"$run_id"}}, layer)',
        "query": {
            "query": f'label_values({cat.LAYER_GRAD_NORM.name}{{run_id=~"$run_id"}}, layer)',
            "refId": "layer-values",
            "qryType": 1,
        },
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }
    panels = [
        Panel(
            "RMS state sqrt(v) (all parameters)",
            "heatmap",
            [Query(f"sum by (le) ({sel(cat.STATE_RMS, '_bucket')})", heatmap=True)],
            "Gauge histogram of the optimizer's RMS state; see docs/metrics.md.",
        ),
        Panel(
            "Effective learning rate lr / (sqrt(v) + eps)",
            "heatmap",
            [Query(f"sum by (le) ({sel(cat.EFFECTIVE_LR, '_bucket')})", heatmap=True)],
        ),
        Panel(
            "Effective LR statistics",
            "timeseries",
            [Query(sel(cat.EFFECTIVE_LR_STAT), "{{stat}} {{run_id}}")],
            log_scale=True,
        ),
        Panel(
            "Learning rate by param group",
            "timeseries",
            [Query(sel(cat.LEARNING_RATE), "group {{group}} {{run_id}}")],
            log_scale=True,
        ),
        Panel(
            "Gradient norm by layer",
            "timeseries",
            [Query(sel(cat.LAYER_GRAD_NORM, extra=layer), "{{layer}}")],
            log_scale=True,
        ),
        Panel(
            "Update ratio by layer",
            "timeseries",
            [Query(sel(cat.LAYER_UPDATE_RATIO, extra=layer), "{{layer}}")],
            log_scale=True,
        ),
        Panel(
            "Effective LR p95 by layer",
            "timeseries",
            [Query(sel(cat.LAYER_EFFECTIVE_LR_STAT, extra=f'{layer}, stat="p95"'), "{{layer}}")],
            log_scale=True,
        ),
        Panel(
            "Median sqrt(v) by layer",
            "timeseries",
            [
                Query(
                    "histogram_quantile(0.5, sum by (le, layer) "
                    f"({sel(cat.LAYER_STATE_RMS, '_bucket', layer)}))",
                    "{{layer}}",
                )
            ],
            log_scale=True,
        ),
        Panel(
            "Layers exported by name (cardinality guard)",
            "timeseries",
            [
                Query(sel(cat.EXPORTED_LAYERS), "exported {{run_id}}"),
                Query(sel(cat.PARAMETER_TENSORS), "tensors {{run_id}}"),
            ],
            'The rest are merged into layer="__other__"; see max_layers in docs/metrics.md.',
        ),
        Panel(
            "Parameter and update norms",
            "timeseries",
            [
                Query(sel(cat.PARAM_NORM), "param {{run_id}}"),
                Query(sel(cat.UPDATE_NORM), "update {{run_id}}"),
            ],
            log_scale=True,
        ),
    ]
    return dashboard(
        "rmswatch-debug",
        "rmswatch / Debug",
        "Inside the optimizer: RMS state and effective-LR distributions, per-layer statistics.",
        panels,
        variables=[layer_var],
    )


DASHBOARDS = {"executive": executive, "oncall": oncall, "debug": debug}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmswatch.generators.grafana")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR", help="write <name>.json for every dashboard")
    group.add_argument("--check", metavar="DIR", help="exit 1 when a file in DIR is stale")
    args = parser.parse_args(argv)
    folder = Path(args.write or args.check)
    stale = []
    for name in DASHBOARDS:
        path = folder / f"{name}.json"
        text = render(name)
        if args.write:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(str(path))
    if stale:
        print(f"stale: {', '.join(stale)}; run `python -m rmswatch.generators.grafana "
              f"--write {folder}`", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
