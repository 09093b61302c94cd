"""Each subpackage shows a few names: `__all__` sorted, every name resolves, imports stay lazy."""

from __future__ import annotations

import importlib

import pytest

from tests.helpers import python_output

SUBPACKAGES = {
    "rmswatch.trainer_hooks": {
        "CheckpointRecord",
        "Histogram",
        "LayerInfo",
        "LayerStats",
        "Monitor",
        "RankCheckRecord",
        "RunInfo",
        "RunStatus",
        "Sink",
        "StepRecord",
        "SystemSample",
        "ValidationRecord",
    },
    "rmswatch.collectors": {
        "HttpShipper",
        "PrometheusSink",
        "StoreWriter",
        "SystemSampler",
        "WireError",
    },
    "rmswatch.store": {
        "RetentionConfig",
        "StoreError",
        "apply_retention",
        "make_engine",
        "open_store",
        "upgrade",
        "write_transaction",
    },
    "rmswatch.alerting": {
        "DeliveryError",
        "HealthConfig",
        "Signal",
        "SloSpec",
        "acknowledge_alert",
        "create_silence",
        "expire_silence",
        "list_silences",
        "start_scheduler",
    },
}


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_all_is_sorted_complete_and_every_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    assert set(module.__all__) == SUBPACKAGES[name]
    for public in module.__all__:
        value = getattr(module, public)
        assert value is not None and value.__name__ == public
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_importing_the_subpackages_loads_no_torch_and_no_sink_dependencies() -> None:
    code = (
        "import sys, rmswatch.trainer_hooks, rmswatch.collectors, rmswatch.store, "
        "rmswatch.alerting;"
        "print(sorted(m for m in ('torch', 'prometheus_client', 'sqlalchemy') if m in sys.modules))"
    )
    out = python_output(code)
    assert out == "[]"
