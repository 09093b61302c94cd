"""`store.retention` in the server config: how long the store keeps which telemetry.

Read by `rmswatch.store.retention.apply_retention`; a module of its own so that reading a config
file (`rmswatch rules`) never imports SQLAlchemy.
"""

from __future__ import annotations

from pydantic import Field

from rmswatch._validation import StrictModel


class RetentionConfig(StrictModel):
    # every step's histograms for this long, then every `downsample_every`-th
    full_resolution_hours: float = Field(default=1.0, gt=0)
    downsample_every: int = Field(default=10, ge=1)
    # telemetry older than this is deleted (None keeps everything)
    keep_days: float | None = Field(default=90.0, gt=0)
