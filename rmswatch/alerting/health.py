"""Training-health rules over each run's recent steps: one verdict per (rule, run).

Pure functions of DataFrames (from `rmswatch.store.queries.alerts_sli`) and of the little memory
the evaluator keeps per run between ticks (`RunMemory`); step-based windows count telemetry rows
(one per `every` optimizer steps), newest last. Every row logged since the previous tick is
judged, not only the newest: a NaN or a spike between two ticks is not missed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

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


@dataclass
class RunMemory:
    """What the evaluator remembers about one run between ticks.

    `evaluated_step`: the newest step judged at the previous tick (None before the first).
    `best_loss`: the lowest smoothed loss seen so far, the divergence baseline: it never
    rises, so a divergence cannot drag its own baseline up after it.
    `resume_reference`: for a resumed run, the optimizer's own contribution to the effective
    lr (eff_lr / lr) over the last window of the run it resumed from; None when unknown.
    `first_window`: that contribution over the resumed run's first window, once it has one.
    """

    evaluated_step: float | None = None
    best_loss: float = math.inf
    resume_reference: float | None = None
    first_window: float | None = None


@dataclass(frozen=True)
class HealthInputs:
    """Everything one tick's health rules read (frames from `store.queries.alerts_sli`)."""

    runs: pd.DataFrame  # the runs judged: running, or ended since the previous tick
    tails: pd.DataFrame
    validations: pd.DataFrame
    failures: pd.DataFrame
    now: float
    memory: Mapping[int, RunMemory] = field(default_factory=dict)
    # per run: the job's previous succeeded runs' loss by step and validations (`history`)
    history: Mapping[int, JobHistory] = field(default_factory=dict)
    # each run's newest checkpoint load and cross-rank check (`queries.ranks`), when read
    loads: pd.DataFrame | None = None
    rank_checks: pd.DataFrame | None = None


@dataclass(frozen=True)
class JobHistory:
    """Previous succeeded retrains of a run's job: `losses` (run_pk, step, loss), one row per
    telemetry step, `final_steps` (their last step) and `final_validation` (their last
    validation loss)."""

    losses: pd.DataFrame
    final_steps: tuple[float, ...]
    final_validation: tuple[float, ...]


def rows_needed(config: HealthConfig) -> int:
    """Telemetry rows per run the step-based rules look at."""
    return max(
        config.nonfinite.window_steps,
        config.divergence.median_window_steps + config.divergence.consecutive_steps,
        config.grad_norm_variance.reference_steps + config.grad_norm_variance.window_steps,
        2 * config.eff_lr_jump.window_steps,
        config.amp_skips.window_steps,
        config.slow_convergence.smooth_steps,
    )


def _positions(tails: pd.DataFrame) -> pd.Series:
    """0 for each run's newest row, 1 for the one before, ..."""
    return tails.groupby("run_pk").cumcount(ascending=False)


def _number(series: pd.Series, key: object, default: float = math.nan) -> float:
    value = series.get(key, default)
    return default if value is None else float(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _new_rows(frame: pd.DataFrame, memory: Mapping[int, RunMemory], newest: int) -> pd.Series:
    """Each run's newest `newest` rows, and every row logged since the previous tick judged
    it (a run seen for the first time has only its newest rows judged: an evaluator that
    restarts must not page again for a NaN long over)."""
    since = frame["run_pk"].map(
        {pk: m.evaluated_step for pk, m in memory.items() if m.evaluated_step is not None}
    )
    unseen = since.notna() & (frame["step"] > since)
    return unseen | (_positions(frame) < newest)


def nonfinite(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int],
              memory: Mapping[int, RunMemory]) -> list[Verdict]:  # fmt: skip
    """Non-finite counts in any row since the previous tick (and the newest `window_steps`).
    A step the GradScaler skipped is AMP doing its job, not garbage in the weights: repeated
    skips are `amp_skips`' to judge."""
    rule = config.nonfinite
    judged = tails[_new_rows(tails, memory, rule.window_steps) & (tails["skipped"] != 1)]
    columns = [f"nonfinite_{k}" for k in rule.kinds]
    sums = judged.groupby("run_pk")[columns].sum()
    bad = judged[judged[columns].sum(axis=1) > 0]
    first_bad = bad.groupby("run_pk")["step"].min()
    by_column = {c: sums[c].to_dict() for c in columns}
    out = []
    for pk in run_pks:
        counts = {c: float(by_column[c].get(pk, 0)) for c in columns}
        total = sum(counts.values())
        parts = ", ".join(f"{c.removeprefix('nonfinite_')} {int(counts[c])}" for c in columns)
        step = int(_number(first_bad, pk, -1))
        summary = f"{int(total)} non-finite values ({parts}) since step {step}"
        out.append(Verdict("nonfinite", pk, total > 0, total, summary))
    return out


def divergence(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int],
               memory: Mapping[int, RunMemory]) -> list[Verdict]:  # fmt: skip
    """The loss stayed above `factor` x the run's best smoothed loss for `consecutive_steps`
    rows (or the gradient norm was exactly 0 for them while the loss stayed above
    `zero_grad_factor` x that best: nothing can learn any more). The baseline is the lowest
    rolling median (`median_window_steps` rows, at least half full) the run has had, kept
    across ticks in `memory`: it never follows a divergence up, so the alert stays firing
    while the loss stays up and resolves when the loss comes back or the run ends."""
    rule = config.divergence
    n = rule.consecutive_steps
    out = []
    for key, rows in tails.groupby("run_pk", sort=False):
        pk = int(key)  # type: ignore[arg-type]
        state = memory.get(pk) or RunMemory()
        loss = rows["loss"].to_numpy(dtype=float)
        grad = rows["grad_norm"].to_numpy(dtype=float)
        finite = np.where(np.isfinite(loss), loss, np.nan)
        smooth = (
            pd.Series(finite)
            .rolling(rule.median_window_steps, min_periods=max(1, rule.median_window_steps // 2))
            .median()
            .to_numpy()
        )
        # the baseline before row i: the best smoothed loss up to the row before i's window
        running_best = np.fmin.accumulate(np.where(np.isnan(smooth), np.inf, smooth))
        before = np.concatenate([np.full(n, np.inf), running_best[:-n]])[: len(loss)]
        before = np.minimum(before, state.best_loss)
        low = pd.Series(loss).rolling(n).min().to_numpy()
        zero = pd.Series(grad == 0.0).rolling(n).sum().to_numpy() >= n
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(before > 0, low / before, np.nan)
        above = ratio > rule.factor
        collapsed = zero & (ratio > rule.zero_grad_factor)
        judged = _new_rows(rows, memory, 1).to_numpy()
        hits = (above | collapsed) & judged
        newest_best = (
            float(min(state.best_loss, running_best[-1])) if len(loss) else state.best_loss
        )
        state.best_loss = newest_best
        active = bool(hits.any())
        where = int(np.flatnonzero(hits)[-1]) if active else len(loss) - 1
        value = float(ratio[where]) if len(loss) and math.isfinite(ratio[where]) else math.nan
        baseline = float(before[where]) if len(loss) else math.nan
        if active and collapsed[where] and not above[where]:
            summary = (
                f"gradient norm exactly 0 for {n} steps while the loss {_fmt(low[where])} is "
                f"{_fmt(value)}x its best smoothed level {_fmt(baseline)}: nothing is learning"
            )
        else:
            summary = (
                f"loss {_fmt(low[where]) if len(loss) else 'n/a'} has been {_fmt(value)}x its "
                f"best smoothed level {_fmt(baseline)} for {n} steps (threshold {rule.factor}x)"
            )
        out.append(Verdict("divergence", pk, active, None if math.isnan(value) else value, summary))
    seen = {v.run_pk for v in out}
    out += [
        Verdict("divergence", pk, False, None, "no steps yet") for pk in run_pks if pk not in seen
    ]
    wanted = set(run_pks)
    return [v for v in out if v.run_pk in wanted]


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


def validation_noise(values: np.ndarray) -> float:
    """A robust estimate of one validation loss's noise: the median absolute successive
    difference, scaled to a standard deviation (1.4826 / sqrt 2); NaN with under 4 values."""
    if len(values) < 4:
        return math.nan
    return float(np.median(np.abs(np.diff(values))) * 1.4826 / math.sqrt(2.0))


def validation_regression(
    config: HealthConfig, validations: pd.DataFrame, run_pks: list[int]
) -> list[Verdict]:
    """The last `window` validation losses are all worse than the best earlier one by more
    than `tolerance` and by more than `noise_factor` x the validation noise: a noisy
    validation set needs a proportionately larger regression before it is evidence."""
    rule = config.validation_regression
    by_run = {pk: g["value"].to_numpy(dtype=float) for pk, g in validations.groupby("run_pk")}
    out = []
    for pk in run_pks:
        values = by_run.get(pk, np.array([]))
        values = values[np.isfinite(values)]
        active, ratio, noise, best = False, math.nan, math.nan, math.nan
        if len(values) > rule.window:
            best = float(values[: -rule.window].min())
            recent = values[-rule.window :]
            noise = validation_noise(values)
            if best > 0:
                ratio = float(recent.min()) / best
            margin = max(abs(best) * rule.tolerance, rule.noise_factor * noise)
            active = bool(not math.isnan(noise) and (recent > best + margin).all())
        summary = (
            f"last {rule.window} validation losses are {_fmt(ratio)}x or more the best earlier "
            f"one {_fmt(best)} (needs more than {rule.tolerance:.0%} and {rule.noise_factor:g}x "
            f"the validation noise {_fmt(noise)})"
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


def optimizer_contribution(frame: pd.DataFrame) -> pd.Series:
    """eff_lr_mean / lr: what RMSProp's 1 / (sqrt(v) + eps) makes of the learning rate, without
    the learning rate itself (a scheduler's warm-up or decay is not the optimizer's doing)."""
    lr = frame["lr"].where(frame["lr"] > 0)
    return frame["eff_lr_mean"] / lr


def eff_lr_jump(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int],
                memory: Mapping[int, RunMemory]) -> list[Verdict]:  # fmt: skip
    """Three ways the effective lr jumps that a schedule never causes:

    - the optimizer's own contribution (eff_lr / lr) rose more than `factor` x between the
      last two `window_steps` windows (square_avg collapsed: gradients vanished, state reset);
    - a resumed run's first window is more than `factor` x the last window of the run it
      resumed from (its checkpoint lost the optimizer state: square_avg restarted at 0);
    - the lr itself rose more than `factor` x from one telemetry step to the next (a person
      raised it by hand; schedulers' warm-ups rise a little per step).

    A fall in eff_lr / lr follows growing gradients (and every fresh run's square_avg warm-up),
    which the divergence rule judges; it is not reported here.
    """
    rule = config.eff_lr_jump
    # windows count steps that have an eff-LR: in budget mode most records are sentinel-only
    with_eff = tails[np.isfinite(tails["eff_lr_mean"].astype("float64"))]
    frame = with_eff.assign(
        window=_positions(with_eff) // rule.window_steps,
        contribution=optimizer_contribution(with_eff),
    )
    usable = frame[(frame["window"] < 2) & np.isfinite(frame["contribution"])]
    means = usable.groupby(["run_pk", "window"])["contribution"].mean().to_dict()
    sizes = usable.groupby(["run_pk", "window"]).size().to_dict()
    judged = tails[_new_rows(tails, memory, 1)]
    lr_step = judged["lr"] / tails.groupby("run_pk")["lr"].shift(1).reindex(judged.index)
    lr_jump = judged.assign(lr_step=lr_step)[lr_step > rule.factor]
    raised = lr_jump.groupby("run_pk").agg(step=("step", "max"), ratio=("lr_step", "max"))
    out = []
    for pk in run_pks:
        state = memory.get(pk) or RunMemory()
        active, ratio = False, math.nan
        summary = (
            f"the optimizer's contribution to the effective lr (eff_lr / lr) changed "
            f"{{ratio}}x between the last two {rule.window_steps}-step windows "
            f"(threshold {rule.factor}x)"
        )
        full = sizes.get((pk, 0), 0) >= rule.window_steps
        if full and sizes.get((pk, 1), 0) >= rule.window_steps and means[(pk, 1)] > 0:
            ratio = float(means[(pk, 0)]) / float(means[(pk, 1)])
            active = ratio > rule.factor
        if state.resume_reference and state.first_window:
            resumed = state.first_window / state.resume_reference
            if resumed > rule.factor:
                active, ratio = True, resumed
                summary = (
                    "after the resume, the optimizer's contribution to the effective lr is "
                    "{ratio}x what it was at the end of the run it resumed from: the "
                    "checkpoint did not restore the optimizer state (square_avg restarted at 0)"
                )
        if pk in raised.index:
            lr_ratio = float(raised.loc[pk, "ratio"])  # type: ignore[arg-type]
            active, ratio = True, max(lr_ratio, ratio) if not math.isnan(ratio) else lr_ratio
            summary = (
                f"the learning rate was raised {_fmt(lr_ratio)}x in one step at step "
                f"{int(raised.loc[pk, 'step'])} (a change by hand, not a schedule)"  # type: ignore[arg-type]
            )
        out.append(
            Verdict(
                "eff_lr_jump", pk, bool(active), None if math.isnan(ratio) else ratio,
                summary.replace("{ratio}", _fmt(ratio)),
            )
        )  # fmt: skip
    return out


def first_window_contribution(tails: pd.DataFrame, pk: int, window_steps: int) -> float | None:
    """The mean eff_lr / lr over a run's first `window_steps` telemetry rows (None until it
    has that many)."""
    rows = tails[tails["run_pk"] == pk].sort_values("step").head(window_steps)
    values = optimizer_contribution(rows)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) >= window_steps else None


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


# ------------------------------------------------------------------- against the job's history


def slow_convergence(config: HealthConfig, tails: pd.DataFrame, run_pks: list[int],
                     history: Mapping[int, JobHistory]) -> list[Verdict]:  # fmt: skip
    """The run's smoothed loss is more than `factor` x what the job's previous succeeded
    retrains had at the same step (their median; at their end, for one that ended before this
    step), from `min_steps` on: a flat loss curve."""
    rule = config.slow_convergence
    out = []
    newest = tails.groupby("run_pk").tail(rule.smooth_steps)
    for pk in run_pks:
        active, ratio, summary = False, math.nan, "no previous retrains of this job to compare"
        past = history.get(pk)
        rows = newest[newest["run_pk"] == pk]
        finite = rows["loss"][np.isfinite(rows["loss"])]
        if past is not None and not past.losses.empty and len(finite) >= rule.smooth_steps // 2:
            step = float(rows["step"].max())
            lo = step - rule.smooth_steps * max(1.0, _stride(rows))
            near = past.losses[(past.losses["step"] > lo) & (past.losses["step"] <= step)]
            # a previous retrain that ended before this step is compared at its end
            ended = past.losses.groupby("run_pk")["step"].transform("max") <= lo
            final = past.losses[ended].groupby("run_pk").tail(rule.smooth_steps)
            near = pd.concat([near, final])
            per_run = near.groupby("run_pk")["loss"].median()
            if step >= rule.min_steps and len(per_run):
                then = float(per_run.median())
                now = float(finite.median())
                ratio = now / then if then > 0 else math.nan
                active = bool(ratio > rule.factor)
                summary = (
                    f"loss {_fmt(now)} at step {int(step)} is {_fmt(ratio)}x the {_fmt(then)} the "
                    f"job's previous {len(per_run)} retrains had there (threshold {rule.factor}x)"
                )
        out.append(
            Verdict("slow_convergence", pk, active, None if math.isnan(ratio) else ratio, summary)
        )
    return out


def _stride(rows: pd.DataFrame) -> float:
    steps = rows["step"].to_numpy(dtype=float)
    return float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0


def overspend(config: HealthConfig, runs: pd.DataFrame, validations: pd.DataFrame,
              history: Mapping[int, JobHistory]) -> list[Verdict]:  # fmt: skip
    """The run has taken more than `factor` x the steps the job's previous succeeded retrains
    took in all, and has still not reached the validation loss they ended at."""
    rule = config.overspend
    best_val = validations.groupby("run_pk")["value"].min()
    out = []
    for run in runs.to_dict("records"):
        pk = int(run["run_pk"])
        past = history.get(pk)
        active, ratio, summary = False, math.nan, "no previous retrains of this job to compare"
        step = float(run["last_step"]) if run["last_step"] is not None else math.nan
        if past is not None and past.final_steps and not math.isnan(step):
            budget = float(np.median(past.final_steps))
            target = float(np.median(past.final_validation)) if past.final_validation else math.nan
            best = _number(best_val, pk)
            ratio = step / budget if budget > 0 else math.nan
            reached = not math.isnan(best) and not math.isnan(target) and best <= target
            active = bool(ratio > rule.factor and not reached)
            summary = (
                f"{int(step)} steps, {_fmt(ratio)}x the {int(budget)} the job's previous "
                f"retrains took, and its best validation loss {_fmt(best)} has not reached "
                f"their {_fmt(target)} (threshold {rule.factor}x)"
            )
        out.append(Verdict("overspend", pk, active, None if math.isnan(ratio) else ratio, summary))
    return out


def evaluate_health(config: HealthConfig, inputs: HealthInputs) -> list[Verdict]:
    """Every enabled rule's verdict for every run in `inputs.runs`."""
    runs, memory = inputs.runs, inputs.memory
    run_pks = [int(pk) for pk in runs["run_pk"]]
    tails = inputs.tails.sort_values(["run_pk", "step"])
    verdicts: list[Verdict] = []
    if config.nonfinite.enabled:
        verdicts += nonfinite(config, tails, run_pks, memory)
    if config.divergence.enabled:
        verdicts += divergence(config, tails, run_pks, memory)
    if config.stalled.enabled:
        verdicts += stalled(config, runs, inputs.now)
    if config.validation_regression.enabled:
        verdicts += validation_regression(config, inputs.validations, run_pks)
    if config.grad_norm_variance.enabled:
        verdicts += grad_norm_variance(config, tails, run_pks)
    if config.eff_lr_jump.enabled:
        verdicts += eff_lr_jump(config, tails, run_pks, memory)
    if config.checkpoint_failures.enabled:
        verdicts += checkpoint_failures(config, inputs.failures, run_pks)
    if config.amp_skips.enabled:
        verdicts += amp_skips(config, tails, run_pks)
    if config.slow_convergence.enabled:
        verdicts += slow_convergence(config, tails, run_pks, inputs.history)
    if config.overspend.enabled:
        verdicts += overspend(config, runs, inputs.validations, inputs.history)
    if config.resume_mismatch.enabled and inputs.loads is not None:
        verdicts += resume_mismatch(inputs.loads, run_pks)
    if config.optimizer_desync.enabled and inputs.rank_checks is not None:
        verdicts += optimizer_desync(inputs.rank_checks, run_pks)
    return verdicts
