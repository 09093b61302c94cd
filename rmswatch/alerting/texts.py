"""Alert names and rule descriptions as data, shared by the evaluator and the rule generator.

A leaf of `alerting`: the built-in evaluator raises these names with these descriptions, and
`rmswatch rules` writes the same ones into Prometheus alerts, so Alertmanager sees one vocabulary.
"""

from __future__ import annotations

SLO_ALERTNAME = "SloErrorBudgetBurn"
SLO_STEPS_ALERTNAME = "SloErrorBudgetBurnSteps"

# health rule (the key in the `health:` config section) -> alert name
RULE_ALERTNAMES = {
    "nonfinite": "TrainingNonFinite",
    "divergence": "TrainingLossDivergence",
    "stalled": "TrainingStalled",
    "validation_regression": "ValidationLossRegression",
    "grad_norm_variance": "GradNormVarianceOutOfRange",
    "eff_lr_jump": "EffectiveLrJump",
    "checkpoint_failures": "CheckpointSaveFailures",
    "amp_skips": "TrainingAmpStepsSkipped",
    # judged against the job's previous retrains: built-in evaluator only (no Prometheus rule)
    "slow_convergence": "TrainingSlowConvergence",
    "overspend": "TrainingOverspend",
    "resume_mismatch": "CheckpointResumeMismatch",
    "optimizer_desync": "OptimizerStateDesync",
}

# health rule -> the alert's `description` annotation
RULE_DESCRIPTIONS = {
    "nonfinite": "The loss or gradients hold NaN/Inf values: the run's updates are garbage.",
    "divergence": (
        "The loss has stayed far above its normal level for several steps (the built-in "
        "evaluator: above the best level this run reached, or gradients exactly zero while the "
        "loss stays high)."
    ),
    "stalled": "The run is marked running but has logged no step for too long.",
    "validation_regression": (
        "Validation loss has got worse than its best for several checks, by more than its own "
        "noise."
    ),
    "grad_norm_variance": "Gradient-norm variance left the range of its recent windows.",
    "eff_lr_jump": (
        "The effective learning rate jumped (the built-in evaluator: the optimizer's own "
        "contribution eff_lr / lr rose, a resume restarted square_avg, or the learning rate "
        "was raised by hand)."
    ),
    "checkpoint_failures": "Checkpoint saves are failing: a crash now would lose progress.",
    "amp_skips": (
        "The GradScaler keeps skipping steps on inf/NaN gradients, or its loss scale has "
        "collapsed: fp16 is overflowing and the run is not learning."
    ),
    "slow_convergence": (
        "The loss is well above what the job's previous retrains had at the same step: the run "
        "is converging too slowly (lr too low, alpha too close to 1)."
    ),
    "overspend": (
        "The run has taken far more steps than the job's previous retrains and has not reached "
        "their validation loss: it is spending compute they did not need."
    ),
    "resume_mismatch": (
        "The run resumed from a checkpoint that was refused or does not reproduce its saved "
        "optimizer state: it is not continuing the training it claims to."
    ),
    "optimizer_desync": (
        "The ranks of a distributed run hold different optimizer state (square_avg or "
        "parameters): they are no longer training one model."
    ),
}

# SLO alerts: the summary and description annotations, filled in per series
SLO_BURN_PAIR = "{long}x ({long_window}) / {short}x ({short_window}) vs {factor:g}"
SLO_SUMMARY = "SLO {slo} ({objective:g}%) for {job}: burn {burns}; {budget}"
SLO_DESCRIPTION = (
    "{description} Error budget burns faster than the {severity} threshold in both windows of "
    "a pair (at least {min_events} events in the long window). Events in period: {events:.0f}, "
    "bad: {bad:.0f}."
)
BUDGET_SPENT = "the {period} error budget is spent ({budgets:.3g}x the budget)"
BUDGET_TOO_FEW = "too few events ({events:.0f} of {needed}) to judge the budget"
BUDGET_LEFT = "{remaining:.0%} of the {period} budget left"
SLO_STEPS_SUMMARY = (
    "SLO {slo} ({objective:g}%) for {job} run {run_id}: burn {long}x over its last "
    "{long_steps} steps and {short}x over the last {short_steps} (threshold {factor:g}x)"
)
SLO_STEPS_DESCRIPTION = "{description} Judged over steps rather than wall-clock time."
RUN_ENDED_SUMMARY = "{job} run {run_id} ended ({status})"
HEALTH_SUMMARY = "{job} run {run_id}: {summary}"
