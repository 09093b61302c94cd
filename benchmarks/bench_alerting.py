"""One alert-evaluation tick over 1,000 SLO/run series with 30 days of 1-minute history.

Side by side in one run: the incremental `Evaluator.tick` (bucket history kept between ticks,
store read only since the last tick) and a full recount of every window from dense per-minute
counts (the cheapest non-incremental design). Medians of several ticks.

    /work/venv/bin/python benchmarks/bench_alerting.py [--series 1000] [--ticks 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmswatch.alerting.evaluate import Evaluator  # noqa: E402
from rmswatch.alerting.slo import COARSE_FACTOR  # noqa: E402
from rmswatch.config import Config  # noqa: E402
from tests.alerting.slo_store import add_run, at, new_store  # noqa: E402

DAY_MINUTES = 24 * 60


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    n, minutes = args.series, 30 * DAY_MINUTES
    now = 1_750_000_020.0 - (1_750_000_020.0 % 60)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        engine = new_store(f"sqlite:///{tmp}/bench.db")
        pks = [
            add_run(engine, f"run-{i}", job=f"job-{i}", started=now - minutes * 60)
            for i in range(n)
        ]
        # the store holds the last 2 hours (1 step row per run per minute); older history
        # is what a cold start would have aggregated: seeded straight into the bucket history
        rows = []
        for m in range(120, 0, -1):
            t = now - m * 60 + 1
            rows += [{"run_pk": pk, "step": minutes - m, "time": at(t), "loss": 1.0,
                      "grad_norm": 1.0, "eff_lr_mean": 1e-3, "step_seconds": 0.1,
                      "nonfinite_loss": int(rng.random() < 0.001)} for pk in pks]  # fmt: skip
        from rmswatch.store.models import Run, Step

        with engine.begin() as conn:
            conn.execute(Step.__table__.insert(), rows)
            conn.execute(
                Run.__table__.update().values(last_step=minutes - 1, last_step_at=at(now - 59))
            )
        nan_free = {"name": "nan-free", "sli": {"kind": "nonfinite_free_steps"}, "objective": 99.9}
        config = Config.model_validate({"evaluation": {"default_slos": False}, "slos": [nan_free]})
        evaluator = Evaluator(engine, config)
        cold_start = time.perf_counter()
        evaluator.tick(now)
        cold = time.perf_counter() - cold_start
        history = evaluator._states["nan-free"].history
        total = np.ones((n, minutes), dtype=np.float32)
        bad = (rng.random((n, minutes)) < 0.001).astype(np.float32)
        keys = [f"job-{i}" for i in range(n)]
        end = int(now // 60)
        older = pd.DataFrame({
            "key": np.repeat(keys, minutes // COARSE_FACTOR),
            "bucket": np.tile(np.arange(end // 60 - minutes // 60, end // 60), n),
            "good": (total - bad).reshape(n, -1, 60).sum(axis=2).ravel(),
            "total": total.reshape(n, -1, 60).sum(axis=2).ravel(),
        })  # fmt: skip
        history.add_coarse(older)
        incremental, recount = [], []
        for k in range(1, args.ticks + 1):
            t = now + k * 60
            new = [{"run_pk": pk, "step": minutes + k, "time": at(t - 30), "loss": 1.0,
                    "grad_norm": 1.0, "eff_lr_mean": 1e-3, "step_seconds": 0.1,
                    "nonfinite_loss": 0} for pk in pks]  # fmt: skip
            with engine.begin() as conn:
                conn.execute(Step.__table__.insert(), new)
                conn.execute(
                    Run.__table__.update().values(last_step=minutes + k, last_step_at=at(t - 30))
                )
            start = time.perf_counter()
            if args.profile and k == args.ticks:
                import cProfile
                import pstats

                with cProfile.Profile() as profile:
                    signals = evaluator.tick(t)
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
            else:
                signals = evaluator.tick(t)
            incremental.append(time.perf_counter() - start)
            start = time.perf_counter()
            total = np.roll(total, -1, axis=1)
            bad = np.roll(bad, -1, axis=1)
            total[:, -1], bad[:, -1] = 1.0, 0.0
            for window in (5, 30, 60, 120, 360, DAY_MINUTES, 3 * DAY_MINUTES, minutes):
                total[:, -window:].sum(axis=1, dtype=np.float64)
                bad[:, -window:].sum(axis=1, dtype=np.float64)
            recount.append(time.perf_counter() - start)
        inc, full = statistics.median(incremental), statistics.median(recount)
        print(f"series={n} history={minutes} minutes signals/tick={len(signals)}")
        print(f"cold first tick (store holds 2h):     {cold * 1000:8.1f} ms")
        print(f"incremental tick (median of {args.ticks}):     {inc * 1000:8.1f} ms")
        print(f"dense recount of the windows (median): {full * 1000:8.1f} ms")
        print(f"recount / incremental: {full / inc:.1f}x")


if __name__ == "__main__":
    main()
