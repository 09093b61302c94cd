"""Sinks for the monitor (Prometheus, store writer, HTTP shipper, system) and server ingest.

Each name is imported on first use, so that `import rmswatch.collectors` costs nothing: the
exporter needs prometheus_client and numpy, the store writer SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmswatch.collectors.http_shipper import HttpShipper
    from rmswatch.collectors.prometheus import PrometheusSink
    from rmswatch.collectors.store_writer import StoreWriter
    from rmswatch.collectors.system import SystemSampler
    from rmswatch.collectors.wire import WireError

_WHERE = {
    "HttpShipper": "rmswatch.collectors.http_shipper",
    "PrometheusSink": "rmswatch.collectors.prometheus",
    "StoreWriter": "rmswatch.collectors.store_writer",
    "SystemSampler": "rmswatch.collectors.system",
    "WireError": "rmswatch.collectors.wire",
}

__all__ = ["HttpShipper", "PrometheusSink", "StoreWriter", "SystemSampler", "WireError"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rmswatch.collectors' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
