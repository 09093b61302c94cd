"""SLO and training-health specs (YAML, or an OpenSLO v1 subset) -> typed models.

Being built in the alerting issue; the config composes `SloSpec` and `HealthConfig` from here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloSpec(_Strict):
    name: str
    objective: float


class HealthConfig(_Strict):
    pass
