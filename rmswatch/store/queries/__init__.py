"""The one read path into the store: SQL in, pandas DataFrames out, for the app and alerting.

Conventions, the same in every function:

- **Time.** Every time column comes back as a tz-aware UTC pandas Timestamp
  (`datetime64[ns, UTC]`) on both backends (SQLite hands back naive datetimes, which are UTC by
  construction of the write path). Every time argument is a `TimeLike`: an aware datetime or
  Timestamp, a naive one (taken as UTC), or epoch seconds. `epoch_seconds` turns a time column
  into float seconds for callers that do arithmetic on seconds (alert evaluation).
- **Runs.** `runs` and `run` find runs (by job, status, activity, or `run_id`); every per-run
  query takes the run's `run_pk` (a column of both), or a sequence of them.
- **Columns.** Each function's docstring names its columns; an empty result has them too.
- **Size.** `max_points` thins a series in SQL to about that many rows, always keeping the
  newest; `max_steps` reads a heatmap at a step stride that leaves at most that many steps.

Modules: `_runs` (runs and cost), `_steps` (per-step and per-layer statistics), `_events`
(histograms, validations, checkpoints, system and SLI samples), `_evaluation` (SLI event counts
and health-rule inputs of alert evaluation), `_ranks` (distributed runs: per-layer statistics
across ranks, stragglers, desync checks, the newest checkpoint load), `_alerts` (alert state,
silences, the outbox);
`_common` holds the time convention, `_frame` and the step/time filters they share.
"""

from __future__ import annotations

from rmswatch.store.queries._alerts import (
    active_alerts,
    alert_history,
    alerts_for_run,
    alerts_named,
    notifications,
    resolved_alerts,
    silences,
)
from rmswatch.store.queries._common import TimeLike, as_datetime, epoch_seconds
from rmswatch.store.queries._evaluation import (
    COUNT_COLUMNS,
    STEP_TAIL_COLUMNS,
    checkpoint_failures,
    checkpoint_save_counts,
    empty_tails,
    run_outcome_counts,
    sample_counter_increases,
    step_counts,
    step_tails,
    steps_since,
    validation_outcome_counts,
)
from rmswatch.store.queries._events import (
    checkpoints,
    histogram_matrix,
    histograms,
    latest_histogram_exact,
    sli_samples,
    system_samples,
    validations,
)
from rmswatch.store.queries._ranks import (
    RANK_LAYER_FIELDS,
    latest_checkpoint_loads,
    latest_rank_checks,
    layer_across_ranks,
    rank_progress,
    ranks,
    stragglers,
)
from rmswatch.store.queries._runs import RUN_COLUMNS, gpu_hours, last_good_run, run, runs
from rmswatch.store.queries._steps import (
    LAYER_FIELDS,
    STEP_FIELDS,
    first_nonfinite,
    latest_layer_stats,
    layer_matrix,
    layer_names,
    layer_series,
    layer_stats,
    nonfinite_totals,
    step_bounds,
    step_series,
    steps,
    steps_at,
)

__all__ = [
    "COUNT_COLUMNS",
    "LAYER_FIELDS",
    "RANK_LAYER_FIELDS",
    "RUN_COLUMNS",
    "STEP_FIELDS",
    "STEP_TAIL_COLUMNS",
    "TimeLike",
    "active_alerts",
    "alert_history",
    "alerts_for_run",
    "alerts_named",
    "as_datetime",
    "checkpoint_failures",
    "checkpoint_save_counts",
    "checkpoints",
    "empty_tails",
    "epoch_seconds",
    "first_nonfinite",
    "gpu_hours",
    "histogram_matrix",
    "histograms",
    "last_good_run",
    "latest_checkpoint_loads",
    "latest_histogram_exact",
    "latest_layer_stats",
    "latest_rank_checks",
    "layer_across_ranks",
    "layer_matrix",
    "layer_names",
    "layer_series",
    "layer_stats",
    "nonfinite_totals",
    "notifications",
    "rank_progress",
    "ranks",
    "resolved_alerts",
    "run",
    "run_outcome_counts",
    "runs",
    "sample_counter_increases",
    "silences",
    "sli_samples",
    "step_bounds",
    "step_counts",
    "step_series",
    "step_tails",
    "steps",
    "steps_at",
    "steps_since",
    "stragglers",
    "system_samples",
    "validation_outcome_counts",
    "validations",
]
