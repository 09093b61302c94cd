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
    "resume_mismatch": "CheckpointResumeMismatch",
    "optimizer_desync": "OptimizerStateDesync",
}
# Rules evaluated from store rows that have no Prometheus series; `rmswatch rules` leaves them out.
STORE_ONLY_RULES = frozenset({"resume_mismatch", "optimizer_desync"})

# health rule -> the alert's `description` annotation
RULE_DESCRIPTIONS = {
    "nonfinite": "The loss or gradients hold NaN/Inf values: the run's updates are garbage.",
    "divergence": "The loss has stayed far above its recent median for several steps.",
    "stalled": "The run is marked running but has logged no step for too long.",
    "validation_regression": "Validation loss has got worse than its best for several checks.",
    "grad_norm_variance": "Gradient-norm variance left the range of its recent windows.",
    "eff_lr_jump": "The mean effective learning rate jumped between consecutive windows.",
    "checkpoint_failures": "Checkpoint saves are failing: a crash now would lose progress.",
    "resume_mismatch": (
        "The run resumed from a checkpoint that was refused or does not reproduce its saved "
        "optimizer state: it is not continuing the training it claims to."
    ),
    "optimizer_desync": (
        "The ranks of a distributed run hold different optimizer state (square_avg or "
        "parameters): they are no longer training one model."
    ),
}
