"""Server time and peak memory of the on-call and debug views for a 1,000,000-step run.

    /work/venv/bin/python benchmarks/bench_app.py [--steps 1000000] [--repeat 3]

Fills a SQLite store with synthetic rows (bulk inserts), then times the callbacks' work (queries
+ view functions + JSON encoding of the figures) inside the Flask app, downsampled (what the app
does) side by side with the same figures built from every row.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import plotly
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmswatch.config import Config  # noqa: E402
from rmswatch.server import build_server  # noqa: E402
from rmswatch.store.engine import make_engine, upgrade  # noqa: E402
from rmswatch.store.models import LayerStep, Run, Step  # noqa: E402

LAYERS = ("conv1.weight", "fc.weight")


def fill(url: str, steps: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Run),
            [
                {
                    "id": 1,
                    "run_id": "big",
                    "job": "bench",
                    "labels": {},
                    "status": "running",
                    "started_at": t0,
                    "last_step": steps - 1,
                    "layers": [{"name": n} for n in LAYERS],
                    "hyperparameters": [{"lr": 0.01}],
                    "hist_edges": [],
                }
            ],
        )
        chunk = 100_000
        for start in range(0, steps, chunk):
            conn.execute(
                insert(Step),
                [
                    {
                        "run_pk": 1,
                        "step": s,
                        "time": t0 + timedelta(seconds=s),
                        "loss": 1.0 + math.sin(s / 5000.0) + (5.0 if s == 654_321 else 0.0),
                        "grad_norm": 1.0 + (s % 97) / 97,
                    }
                    for s in range(start, min(steps, start + chunk))
                ],
            )
            conn.execute(
                insert(LayerStep),
                [
                    {
                        "run_pk": 1,
                        "step": s,
                        "time": t0 + timedelta(seconds=s),
                        "layer": n,
                        "grad_norm": 1.0,
                        "update_ratio": 1e-3,
                        "eff_lr_mean": 0.01,
                    }
                    for s in range(start, min(steps, start + chunk), 10)
                    for n in LAYERS
                ],
            )
    engine.dispose()


def measure(app_server, label: str, work, repeat: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    times, peaks, sizes = [], [], []
    for _ in range(repeat):
        with app_server.flask.test_request_context("/oncall"):
            begin = time.perf_counter()
            figures = work()
            payload = json.dumps(figures, cls=plotly.utils.PlotlyJSONEncoder)
            times.append(time.perf_counter() - begin)
            sizes.append(len(payload) / 2**20)
            # a separate, untimed pass: tracemalloc slows every allocation down
            tracemalloc.start()
            json.dumps(work(), cls=plotly.utils.PlotlyJSONEncoder)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
    return {
        "seconds": statistics.median(times),
        "peak_mib": statistics.median(peaks),
        "payload_mib": statistics.median(sizes),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        begin = time.perf_counter()
        fill(url, args.steps)
        print(f"filled {args.steps} steps in {time.perf_counter() - begin:.1f}s")
        engine = make_engine(url)
        server = build_server(Config(), engine, start_scheduler=False)
        from rmswatch.app.downsample import downsample_frame
        from rmswatch.app.pages import oncall as oncall_page
        from rmswatch.app.views import oncall
        from rmswatch.store import queries

        def downsampled():  # type: ignore[no-untyped-def]
            return oncall_page.run_figures("big")[:4]

        def every_row():  # type: ignore[no-untyped-def]
            steps = queries.step_series(engine, 1, ["time", "loss", "grad_norm"])
            return [
                oncall.loss_figure(steps, queries.validations(engine, [1])),
                oncall.grad_norm_histogram(steps["grad_norm"]),
            ]

        results = {
            "on-call figures, downsampled (the app)": measure(
                server, "ds", downsampled, args.repeat
            ),
            "loss figure from every row (no downsampling)": measure(
                server, "raw", every_row, args.repeat
            ),
        }
        shown = downsample_frame(queries.step_series(engine, 1, ["loss"]), ["loss"])
        print(
            f"points shipped for the loss curve: {len(shown)} of {args.steps}; "
            f"spike kept: {bool((shown['loss'] > 5).any())}"
        )
        print(
            f"| what | server time (median of {args.repeat}) | Python peak (tracemalloc) "
            "| JSON payload |"
        )
        print("|---|---|---|---|")
        for name, r in results.items():
            print(
                f"| {name} | {r['seconds']:.2f} s | {r['peak_mib']:.0f} MiB "
                f"| {r['payload_mib']:.2f} MiB |"
            )
        print(
            f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
