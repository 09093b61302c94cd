"""The Prometheus metric and label names the generated rules read, in one place.

Every name comes from `rmswatch.catalogue` (the exporter's single source of truth);
this module only picks which catalogue entries each SLI and health rule needs.
"""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

from rmswatch import catalogue as c

# labels the exporter puts on every training series
JOB_LABEL, RUN_LABEL = c.COMMON_LABELS[0], c.COMMON_LABELS[1]

# one observation per telemetry record: the per-step SLIs' "total"
TELEMETRY_STEPS_COUNT = f"{c.STEP_DURATION_SECONDS.name}_count"
STEP_SECONDS_BUCKET = f"{c.STEP_DURATION_SECONDS.name}_bucket"
STEP_SECONDS_BOUNDS = c.STEP_DURATION_BUCKETS
# telemetry steps with any non-finite value (one per step, not per value)
NONFINITE_STEPS_TOTAL = c.NONFINITE_STEPS_TOTAL.name
# non-finite values by kind (loss, grad, param, state)
NONFINITE_TOTAL = c.NONFINITE_VALUES_TOTAL.name
LAST_STEP_TIMESTAMP = c.LAST_STEP_TIMESTAMP_SECONDS.name
LOSS = c.LOSS.name
GRAD_NORM = c.GRAD_NORM.name
EFF_LR_MEAN = f'{c.EFFECTIVE_LR_STAT.name}{{stat="mean"}}'
EFF_LR_STAT = c.EFFECTIVE_LR_STAT.name
VALIDATION_LOSS = f'{c.VALIDATION_LOSS.name}{{name="val_loss"}}'
VALIDATION = c.VALIDATION_LOSS.name
CHECKPOINTS_TOTAL = c.CHECKPOINTS_TOTAL.name  # {action="save"|"load", outcome="ok"|"failed"}


def le(bound: float) -> str:
    """A histogram bucket bound as the exporter writes it in `le`."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


# recording-rule names (sloth's layout, our prefix)
ERROR_RATIO_RECORD = "rmswatch_slo:sli_error:ratio_rate{window}"
EVENTS_RECORD = "rmswatch_slo:sli_events:increase{window}"
