"""Training-health rules over each running run's recent steps: one verdict per (rule, run).

Pure functions of DataFrames (from `rmswatch.alerting.store_inputs`); step-based windows
count telemetry rows (one per `every` optimizer steps), newest last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rmswatch.alerting.spec import HealthConfig
from rmswatch.alerting.texts import RULE_ALERTNAMES as RULE_ALERTNAMES


@dataclass(frozen=True)
class Verdict:
    rule: str
    run_pk: int
    active: bool
    value: float | None
    summary: str


def rows_needed(config: HealthConfig) -> int:
    """Telemetry rows per run the step-based rules look at."""
    return max(
        config.nonfinite.window_steps,
        config.divergence.median_window_steps + config.divergence.consecutive_steps,
        config.grad_norm_variance.reference_steps + config.grad_norm_variance.window_steps,
        2 * config.eff_lr_jump.window_steps,
        config.amp_skips.window_steps,
    )


def _positions(tails: pd.DataFrame) -> pd.Series:
    """0 for each run's newest row, 1 for the one before, ..."""
    return tails.groupby("run_pk").cumcount(ascending=False)


def _number(series: pd.Series, key: object, default: float = math.nan) -> float:
    value = series.get(key, default)
    return default if value is None else float(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def nonfinite(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int]) -> list[Verdict]:
    rule = config.nonfinite
    recent = tails[_positions(tails) < rule.window_steps]
    columns = [f"nonfinite_{k}" for k in rule.kinds]
    sums = recent.groupby("run_pk")[columns].sum()
    last_step = recent.groupby("run_pk")["step"].max()
    by_column = {c: sums[c].to_dict() for c in columns}
    out = []
    for pk in run_pks:
        counts = {c: float(by_column[c].get(pk, 0)) for c in columns}
        total = sum(counts.values())
        parts = ", ".join(f"{c.removeprefix('nonfinite_')} {int(counts[c])}" for c in columns)
        step = int(_number(last_step, pk, -1))
        summary = f"{int(total)} non-finite values ({parts}) at step {step}"
        out.append(Verdict("nonfinite", pk, total > 0, total, summary))
    return out


def divergence(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int]) -> list[Verdict]:
    rule = config.divergence
    position = _positions(tails)
    last = tails[position < rule.consecutive_steps]
    reference = tails[
        (position >= rule.consecutive_steps)
        & (position < rule.consecutive_steps + rule.median_window_steps)
    ]
    finite_ref = reference[np.isfinite(reference["loss"])]
    median = finite_ref.groupby("run_pk")["loss"].median()
    # a reference of a handful of steps says nothing about "recent": want half the window
    enough = finite_ref.groupby("run_pk").size() >= max(1, rule.median_window_steps // 2)
    lowest = last.groupby("run_pk")["loss"].min()
    count = last.groupby("run_pk").size()
    out = []
    for pk in run_pks:
        med = _number(median, pk)
        low = _number(lowest, pk)
        full = _number(count, pk, 0) >= rule.consecutive_steps and _number(enough, pk, 0) > 0
        ratio = low / med if full and med > 0 and not math.isnan(low) else math.nan
        active = bool(ratio > rule.factor)
        summary = (
            f"loss {_fmt(low)} is {_fmt(ratio)}x its recent median {_fmt(med)} for "
            f"{rule.consecutive_steps} steps (threshold {rule.factor}x)"
        )
        out.append(Verdict("divergence", pk, active, None if math.isnan(ratio) else ratio, summary))
    return out


def stalled(config: HealthConfig, runs: pd.DataFrame, now: float) -> list[Verdict]:
    """Only runs marked running can stall: a finished job is not a crashed job."""
    rule = config.stalled
    out = []
    for run in runs.to_dict("records"):
        heartbeat = float(run["last_step_at"])
        last = heartbeat if not math.isnan(heartbeat) else float(run["started_at"])
        silent = now - last
        active = run["status"] == "running" and silent > rule.after
        summary = f"no step for {silent:.0f}s while running (threshold {rule.after:.0f}s)"
        out.append(Verdict("stalled", int(run["run_pk"]), bool(active), silent, summary))
    return out


def validation_regression(
    config: HealthConfig, validations: pd.DataFrame, run_pks: list[int]
) -> list[Verdict]:
    rule = config.validation_regression
    by_run = {pk: g["value"].to_numpy(dtype=float) for pk, g in validations.groupby("run_pk")}
    out = []
    for pk in run_pks:
        values = by_run.get(pk, np.array([]))
        values = values[np.isfinite(values)]
        active, ratio = False, math.nan
        if len(values) > rule.window:
            best = float(values[: -rule.window].min())
            recent = values[-rule.window :]
            if best > 0:
                ratio = float(recent.min()) / best
                active = bool((recent > best * (1 + rule.tolerance)).all())
        summary = (
            f"last {rule.window} validation losses are {_fmt(ratio)}x or more the best earlier "
            f"one (tolerance {rule.tolerance:.0%})"
        )
        out.append(
            Verdict(
                "validation_regression", pk, active, None if math.isnan(ratio) else ratio, summary
            )
        )
    return out


def grad_norm_variance(
    config: HealthConfig, tails: pd.DataFrame, run_pks: list[int]
) -> list[Verdict]:
    """Variance of log grad-norm over the newest window vs the windows before it."""
    rule = config.grad_norm_variance
    frame = tails.assign(position=_positions(tails))
    frame = frame[np.isfinite(frame["grad_norm"]) & (frame["grad_norm"] > 0)]
    frame = frame[frame["position"] < rule.window_steps + rule.reference_steps]
    frame = frame.assign(
        log_norm=np.log(frame["grad_norm"]), chunk=frame["position"] // rule.window_steps
    )
    sizes = frame.groupby(["run_pk", "chunk"]).size()
    variance = frame.groupby(["run_pk", "chunk"])["log_norm"].var()[sizes >= rule.window_steps]
    recent_v: dict[int, float] = {}
    reference_v: dict[int, list[float]] = {}
    for (pk, chunk), value in variance.items():
        if chunk == 0:
            recent_v[int(pk)] = float(value)
        else:
            reference_v.setdefault(int(pk), []).append(float(value))
    out = []
    for pk in run_pks:
        active, ratio, summary = False, math.nan, "not enough steps for a grad-norm range"
        if pk in recent_v and len(reference_v.get(pk, ())) >= 2:
            recent = recent_v[pk]
            low, high = min(reference_v[pk]), max(reference_v[pk])
            if recent > high * rule.factor:
                active, ratio = True, recent / high if high > 0 else math.inf
            elif recent < low / rule.factor:
                active, ratio = True, recent / low
            else:
                ratio = recent / high if high > 0 else math.nan
            summary = (
                f"grad-norm log-variance {_fmt(recent)} outside [{_fmt(low / rule.factor)}, "
                f"{_fmt(high * rule.factor)}] (recent range x{rule.factor})"
            )
        out.append(
            Verdict("grad_norm_variance", pk, active, None if math.isnan(ratio) else ratio, summary)
        )
    return out


def eff_lr_jump(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int]) -> list[Verdict]:
    rule = config.eff_lr_jump
    # Windows count steps that have an eff-LR: in budget mode most records are sentinel-only
    # (no eff-LR), and counting them would leave the windows forever short of full.
    frame = tails[np.isfinite(tails["eff_lr_mean"].astype("float64"))]
    frame = frame.assign(window=_positions(frame) // rule.window_steps)
    frame = frame[frame["window"] < 2]
    means = frame.groupby(["run_pk", "window"])["eff_lr_mean"].mean()
    sizes = frame.groupby(["run_pk", "window"]).size()
    mean_of, size_of = means.to_dict(), sizes.to_dict()
    out = []
    for pk in run_pks:
        active, ratio = False, math.nan
        if (pk, 0) in size_of and (pk, 1) in size_of:
            full = size_of[(pk, 0)] >= rule.window_steps and size_of[(pk, 1)] >= rule.window_steps
            before = float(mean_of[(pk, 1)])
            if full and before > 0:
                ratio = float(mean_of[(pk, 0)]) / before
                active = ratio > rule.factor or ratio < 1 / rule.factor
        summary = (
            f"effective-LR mean changed {_fmt(ratio)}x between the last two "
            f"{rule.window_steps}-step windows (threshold {rule.factor}x)"
        )
        out.append(
            Verdict("eff_lr_jump", pk, active, None if math.isnan(ratio) else ratio, summary)
        )
    return out


def checkpoint_failures(
    config: HealthConfig, failures: pd.DataFrame, run_pks: list[int]
) -> list[Verdict]:
    rule = config.checkpoint_failures
    counts = dict(zip(failures["run_pk"], failures["failures"], strict=True))
    out = []
    for pk in run_pks:
        count = int(counts.get(pk, 0))
        summary = f"{count} failed checkpoint saves in the last {rule.window:.0f}s"
        out.append(Verdict("checkpoint_failures", pk, count >= rule.min_failures, count, summary))
    return out


def amp_skips(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int]) -> list[Verdict]:
    """Repeated GradScaler skips in the last window, or a collapsed loss scale (F6)."""
    rule = config.amp_skips
    recent = tails[_positions(tails) < rule.window_steps]
    skipped = recent.groupby("run_pk")["skipped"].sum()
    scaled = recent[np.isfinite(recent["loss_scale"])]
    newest_scale = scaled.groupby("run_pk")["loss_scale"].last()
    out = []
    for pk in run_pks:
        count = int(_number(skipped, pk, 0))
        scale = _number(newest_scale, pk)
        collapsed = not math.isnan(scale) and scale < rule.min_loss_scale
        summary = (
            f"{count} skipped AMP steps in the last {rule.window_steps} telemetry steps "
            f"(threshold {rule.min_skipped}); loss scale {_fmt(scale)} "
            f"(floor {_fmt(rule.min_loss_scale)})"
        )
        active = count >= rule.min_skipped or collapsed
        out.append(Verdict("amp_skips", pk, active, float(count), summary))
    return out


def resume_mismatch(loads: pd.DataFrame, run_pks: list[int]) -> list[Verdict]:
    """`loads`: each run's newest checkpoint load (`queries.ranks.latest_checkpoint_loads`)."""
    newest = {int(r["run_pk"]): r for r in loads.to_dict("records")}
    out = []
    for pk in run_pks:
        load = newest.get(pk)
        active = load is not None and not bool(load["ok"])
        summary = (
            f"resumed from {load['path']} at step {load['step']}: {load['detail']}"
            if load is not None
            else "no checkpoint load"
        )
        out.append(Verdict("resume_mismatch", pk, active, 1.0 if active else 0.0, summary))
    return out


def optimizer_desync(checks: pd.DataFrame, run_pks: list[int]) -> list[Verdict]:
    """`checks`: each run's newest compared rank check (`queries.ranks.latest_rank_checks`)."""
    newest = {int(r["run_pk"]): r for r in checks.to_dict("records")}
    out = []
    for pk in run_pks:
        check = newest.get(pk)
        if check is None:
            out.append(Verdict("optimizer_desync", pk, False, 0.0, "no cross-rank check"))
        elif check["status"] == "desync":
            differing = float(len(check["ranks"]) - 1)
            out.append(Verdict("optimizer_desync", pk, True, differing, str(check["detail"])))
        else:
            summary = f"ranks in sync at step {check['step']}"
            out.append(Verdict("optimizer_desync", pk, False, 0.0, summary))
    return out


def evaluate_health(
    config: HealthConfig,
    runs: pd.DataFrame,
    tails: pd.DataFrame,
    validations: pd.DataFrame,
    failures: pd.DataFrame,
    now: float,
    *,
    loads: pd.DataFrame | None = None,
    rank_checks: pd.DataFrame | None = None,
) -> list[Verdict]:
    """Every enabled rule's verdict for every run in `runs` (the running ones)."""
    run_pks = [int(pk) for pk in runs["run_pk"]]
    tails = tails.sort_values(["run_pk", "step"])
    verdicts: list[Verdict] = []
    if config.nonfinite.enabled:
        verdicts += nonfinite(config, tails, run_pks)
    if config.divergence.enabled:
        verdicts += divergence(config, tails, run_pks)
    if config.stalled.enabled:
        verdicts += stalled(config, runs, now)
    if config.validation_regression.enabled:
        verdicts += validation_regression(config, validations, run_pks)
    if config.grad_norm_variance.enabled:
        verdicts += grad_norm_variance(config, tails, run_pks)
    if config.eff_lr_jump.enabled:
        verdicts += eff_lr_jump(config, tails, run_pks)
    if config.checkpoint_failures.enabled:
        verdicts += checkpoint_failures(config, failures, run_pks)
    if config.amp_skips.enabled:
        verdicts += amp_skips(config, tails, run_pks)
    if config.resume_mismatch.enabled and loads is not None:
        verdicts += resume_mismatch(loads, run_pks)
    if config.optimizer_desync.enabled and rank_checks is not None:
        verdicts += optimizer_desync(rank_checks, run_pks)
    return verdicts
