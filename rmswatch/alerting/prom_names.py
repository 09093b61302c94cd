"""The Prometheus metric and label names the generated rules read, in one place.

Names follow `rmswatch.collectors.catalogue` (the exporter's single source of truth); this
module only picks which catalogue entries each SLI and health rule needs.
"""

from __future__ import annotations

# labels the exporter puts on every training series
JOB_LABEL = "job"
RUN_LABEL = "run_id"

STEPS_TOTAL = "rmswatch_steps_total"
# steps whose loss or gradients held a non-finite value (one per step, not per value)
NONFINITE_STEPS_TOTAL = "rmswatch_nonfinite_steps_total"
# non-finite values by kind (loss, grad, param, state)
NONFINITE_TOTAL = "rmswatch_nonfinite_total"
STEP_SECONDS = "rmswatch_step_seconds"  # histogram: _bucket{le}, _count
LAST_STEP_TIMESTAMP = "rmswatch_last_step_timestamp_seconds"
LOSS = "rmswatch_loss"
GRAD_NORM = "rmswatch_grad_norm"
EFF_LR_MEAN = "rmswatch_eff_lr_mean"
VALIDATION_LOSS = "rmswatch_validation_loss"
RUNS_FINISHED_TOTAL = "rmswatch_runs_finished_total"  # {status}
CHECKPOINT_SAVES_TOTAL = "rmswatch_checkpoint_saves_total"  # {ok="true"|"false"}

# recording-rule names (sloth's layout, our prefix)
ERROR_RATIO_RECORD = "rmswatch_slo:sli_error:ratio_rate{window}"
EVENTS_RECORD = "rmswatch_slo:sli_events:increase{window}"
