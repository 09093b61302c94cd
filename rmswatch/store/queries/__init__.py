"""The one read path into the store: pandas DataFrames for the app and alerting.

Each area keeps its SQL in its own module here and re-exports its public functions below, one
import block per module (telemetry: runs and their data; views: the app's page queries;
alerts: alert state), so adding a module never touches another's lines.

`views` shares six names with `telemetry` (`runs`, `run`, `histograms`, `validations`,
`checkpoints`, `sli_samples`) with page-shaped signatures; those stay `queries.views.<name>`,
the rest are re-exported here.
"""

from __future__ import annotations

from rmswatch.store.queries import views as views
from rmswatch.store.queries.alerts import active_alerts as active_alerts
from rmswatch.store.queries.alerts import alert_history as alert_history
from rmswatch.store.queries.alerts import alerts_for_run as alerts_for_run
from rmswatch.store.queries.alerts import alerts_named as alerts_named
from rmswatch.store.queries.alerts import notifications as notifications
from rmswatch.store.queries.alerts import silences as silences
from rmswatch.store.queries.telemetry import TimeLike as TimeLike
from rmswatch.store.queries.telemetry import checkpoints as checkpoints
from rmswatch.store.queries.telemetry import gpu_hours as gpu_hours
from rmswatch.store.queries.telemetry import histogram_matrix as histogram_matrix
from rmswatch.store.queries.telemetry import histograms as histograms
from rmswatch.store.queries.telemetry import layer_stats as layer_stats
from rmswatch.store.queries.telemetry import run as run
from rmswatch.store.queries.telemetry import runs as runs
from rmswatch.store.queries.telemetry import sli_samples as sli_samples
from rmswatch.store.queries.telemetry import steps as steps
from rmswatch.store.queries.telemetry import system_samples as system_samples
from rmswatch.store.queries.telemetry import validations as validations
from rmswatch.store.queries.views import first_nonfinite as first_nonfinite
from rmswatch.store.queries.views import last_good_run as last_good_run
from rmswatch.store.queries.views import latest_layer_stats as latest_layer_stats
from rmswatch.store.queries.views import layer_matrix as layer_matrix
from rmswatch.store.queries.views import layer_names as layer_names
from rmswatch.store.queries.views import layer_series as layer_series
from rmswatch.store.queries.views import nonfinite_totals as nonfinite_totals
from rmswatch.store.queries.views import step_bounds as step_bounds
from rmswatch.store.queries.views import step_series as step_series
from rmswatch.store.queries.views import steps_at as steps_at
