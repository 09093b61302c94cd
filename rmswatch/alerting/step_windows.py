"""Per-step SLIs judged over each running run's last N optimizer steps (`step_windows` in
data/burn_rates.yaml), so a slow job and a fast one are held to the same standard."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from rmswatch.alerting import texts
from rmswatch.alerting.signals import Finding
from rmswatch.alerting.slo_eval import fmt
from rmswatch.alerting.spec import PER_STEP_KINDS, SloSpec, burn_policy


def bad_steps(spec: SloSpec, tails: pd.DataFrame, kinds: tuple[str, ...]) -> pd.Series:
    if spec.sli.kind == "step_latency":
        threshold = spec.sli.threshold_seconds or math.inf
        return tails["step_seconds"].notna() & (tails["step_seconds"] > threshold)
    return (tails[[f"nonfinite_{k}" for k in kinds]].sum(axis=1) > 0).astype(bool)


def _get(sums: dict[Any, tuple[float, float]], pk: Any) -> tuple[float, float]:
    bad, total = sums.get(pk, (0.0, 0.0))
    return float(bad), float(total)


def findings(
    slos: Sequence[SloSpec], running: pd.DataFrame, tails: pd.DataFrame, kinds: tuple[str, ...]
) -> list[Finding]:
    step_windows = burn_policy().step_windows
    out: list[Finding] = []
    if tails.empty or not step_windows:
        return out
    newest = tails.groupby("run_pk")["step"].transform("max")
    age = newest - tails["step"]  # 0 for the newest step
    lookup = running.to_dict("records")
    for spec in slos:
        if spec.sli.kind not in PER_STEP_KINDS or not spec.step_windows:
            continue
        bad = bad_steps(spec, tails, kinds)
        counted = tails["step_seconds"].notna()
        for window in step_windows:
            sums = {}
            for n in (window.long_steps, window.short_steps):
                inside = age < n
                if spec.sli.kind == "step_latency":
                    inside &= counted
                frame = pd.DataFrame({"run_pk": tails["run_pk"], "bad": bad & inside,
                                      "total": inside})  # fmt: skip
                summed = frame.groupby("run_pk")[["bad", "total"]].sum()
                sums[n] = dict(
                    zip(summed.index, zip(summed["bad"], summed["total"], strict=True),
                        strict=True)
                )  # fmt: skip
            for run in lookup:
                pk = run["run_pk"]
                if not spec.applies_to(str(run["job"])):
                    continue
                long_b, long_t = _get(sums[window.long_steps], pk)
                short_b, short_t = _get(sums[window.short_steps], pk)
                burn_long = long_b / long_t / spec.error_budget if long_t else math.nan
                burn_short = short_b / short_t / spec.error_budget if short_t else math.nan
                active = (
                    long_t >= spec.effective_min_events
                    and burn_long > window.factor
                    and burn_short > window.factor
                )
                summary = texts.SLO_STEPS_SUMMARY.format(
                    slo=spec.name, objective=spec.objective, job=run["job"],
                    run_id=run["run_id"], long=fmt(burn_long), long_steps=window.long_steps,
                    short=fmt(burn_short), short_steps=window.short_steps, factor=window.factor,
                )  # fmt: skip
                out.append(
                    Finding(
                        alertname=texts.SLO_STEPS_ALERTNAME,
                        severity=window.severity,
                        active=bool(active),
                        value=None if math.isnan(burn_long) else burn_long,
                        job=str(run["job"]),
                        run_id=str(run["run_id"]),
                        run=run,
                        summary=summary,
                        description=texts.SLO_STEPS_DESCRIPTION.format(
                            description=spec.description
                        ),
                        runbook=spec.runbook or "slo",
                        labels={"slo": spec.name, "steps": str(window.long_steps)},
                    )
                )
    return out
