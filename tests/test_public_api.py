"""The public API is one screen: `__all__` is sorted, complete, and every name resolves."""

from __future__ import annotations

import pytest

import rmswatch
from tests.helpers import python_output


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert rmswatch.__all__ == sorted(rmswatch.__all__)
    for name in rmswatch.__all__:
        assert getattr(rmswatch, name) is not None


def test_the_public_names_are_the_architecture_contract() -> None:
    assert set(rmswatch.__all__) == {
        "CheckpointError",
        "CheckpointInfo",
        "Fidelity",
        "Histogram",
        "LayerStats",
        "Monitor",
        "RmswatchError",
        "StepRecord",
        "__version__",
        "load_checkpoint",
        "save_checkpoint",
        "watch",
    }
    assert rmswatch.watch.__module__ == "rmswatch._watch"


@pytest.mark.slow
def test_the_store_and_collectors_import_without_torch() -> None:
    code = (
        "import sys, rmswatch.store.queries, rmswatch.collectors.ingest, rmswatch.config;"
        "print('torch' in sys.modules)"
    )
    out = python_output(code)
    assert out == "False"
