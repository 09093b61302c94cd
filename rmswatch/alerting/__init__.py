"""SLO burn rates and training-health rules -> alert lifecycle -> routes -> receivers.

spec -> model (`spec`, `slo_files`, `routing_config`) -> evaluate (`evaluate`, `health`, `slo`)
-> lifecycle -> route (`routing`, `silences`) -> outbox -> receivers, run by `scheduler`. Each name
is imported on first use, so reading a config never pays for pandas or SQLAlchemy. (`evaluate` is
not exported here: it is also the submodule's name, which Python binds on the package.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmswatch._validation import DeliveryError
    from rmswatch.alerting.lifecycle import acknowledge_alert
    from rmswatch.alerting.scheduler import start_scheduler
    from rmswatch.alerting.signals import Signal
    from rmswatch.alerting.silences import create_silence, expire_silence, list_silences
    from rmswatch.alerting.spec import HealthConfig, SloSpec

_WHERE = {
    "DeliveryError": "rmswatch._validation",
    "HealthConfig": "rmswatch.alerting.spec",
    "Signal": "rmswatch.alerting.signals",
    "SloSpec": "rmswatch.alerting.spec",
    "acknowledge_alert": "rmswatch.alerting.lifecycle",
    "create_silence": "rmswatch.alerting.silences",
    "expire_silence": "rmswatch.alerting.silences",
    "list_silences": "rmswatch.alerting.silences",
    "start_scheduler": "rmswatch.alerting.scheduler",
}

__all__ = [
    "DeliveryError",
    "HealthConfig",
    "Signal",
    "SloSpec",
    "acknowledge_alert",
    "create_silence",
    "expire_silence",
    "list_silences",
    "start_scheduler",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rmswatch.alerting' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
