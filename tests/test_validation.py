"""One error tree: everything rmswatch raises on purpose is a RmswatchError, and the errors that
were ValueErrors before the tree existed still are."""

from __future__ import annotations

import pytest

import rmswatch
from rmswatch._validation import (
    CheckpointError,
    ConfigError,
    DeliveryError,
    RmswatchError,
    StoreError,
    WireError,
)


@pytest.mark.parametrize(
    "error", [ConfigError, WireError, DeliveryError, StoreError, CheckpointError]
)
def test_every_project_error_is_a_rmswatch_error(error: type[Exception]) -> None:
    assert issubclass(error, RmswatchError)


@pytest.mark.parametrize("error", [ConfigError, WireError])
def test_errors_that_were_value_errors_still_are(error: type[Exception]) -> None:
    assert issubclass(error, ValueError)


def test_the_old_import_locations_name_the_same_classes() -> None:
    from rmswatch.alerting.receivers import DeliveryError as receivers_delivery_error
    from rmswatch.collectors.wire import WireError as wire_wire_error
    from rmswatch.config import ConfigError as config_config_error

    assert config_config_error is ConfigError
    assert wire_wire_error is WireError
    assert receivers_delivery_error is DeliveryError


def test_the_public_names_are_the_tree_root_and_the_checkpoint_error() -> None:
    assert rmswatch.RmswatchError is RmswatchError
    assert rmswatch.CheckpointError is CheckpointError


def test_a_checkpoint_error_names_the_file_and_the_reason() -> None:
    error = CheckpointError("/ckpt/step-100.pt", "written by a newer rmswatch (format 3)")
    assert error.path == "/ckpt/step-100.pt"
    assert error.reason == "written by a newer rmswatch (format 3)"
    assert str(error) == "/ckpt/step-100.pt: written by a newer rmswatch (format 3)"


def test_a_config_error_lists_each_problem_under_the_file() -> None:
    error = ConfigError("server.yaml", ["server.port: too big (got: 99999)", "route: unknown key"])
    assert error.problems == ["server.port: too big (got: 99999)", "route: unknown key"]
    assert str(error).splitlines() == [
        "server.yaml: invalid config",
        "  - server.port: too big (got: 99999)",
        "  - route: unknown key",
    ]
