"""The shared input rules: one error tree (everything raised on purpose is a RmswatchError, and
what was a ValueError still is), one duration grammar, one URL rule, one strict base model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

import rmswatch
from rmswatch._validation import (
    ArgumentError,
    CheckpointError,
    ConfigError,
    DeliveryError,
    Duration,
    RmswatchError,
    StoreError,
    StrictModel,
    WireError,
    check_url,
    format_validation_error,
    parse_duration,
)
from rmswatch.alerting.silences import list_silences
from rmswatch.config import Config, load_config
from rmswatch.store.engine import make_engine


@pytest.mark.parametrize(
    "error", [ConfigError, WireError, DeliveryError, StoreError, CheckpointError]
)
def test_every_project_error_is_a_rmswatch_error(error: type[Exception]) -> None:
    assert issubclass(error, RmswatchError)


@pytest.mark.parametrize("error", [ArgumentError, ConfigError, WireError])
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


def test_a_config_error_is_one_line_naming_the_file_and_each_problem() -> None:
    error = ConfigError("server.yaml", ["server.port: too big (got: 99999)", "route: unknown key"])
    assert error.problems == ["server.port: too big (got: 99999)", "route: unknown key"]
    assert str(error) == (
        "server.yaml: invalid config: server.port: too big (got: 99999); route: unknown key"
    )


# -- one duration grammar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0),
     ("1h 30m", 5400.0), ("1.5d", 129600.0), ("500ms", 0.5), ("1w", 604800.0), (0, 0.0)],
)  # fmt: skip
def test_durations_parse_as_prometheus_writes_them(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "-5m", "soon", "5 minutes", True])
def test_nan_infinite_negative_and_malformed_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="30s, 5m"):
        parse_duration(bad)


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "rmswatch.yml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def _problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return str(caught.value)


ROUTE = (
    "receivers:\n  - {name: oncall, url: 'http://127.0.0.1:9099/hook'}\n"
    "route:\n  receiver: oncall\n"
)


def test_1h30m_is_one_duration_in_routes_slo_periods_and_the_outbox(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        ROUTE + "  group_wait: 1h30m\n"
        "outbox: {max_backoff_seconds: 1h30m}\n"
        "slos:\n  - {name: a, sli: {kind: retrain_success}, objective: 99, period: 1h30m}\n",
    )
    assert config.route is not None and config.route.group_wait == 5400.0
    assert config.outbox.max_backoff_seconds == 5400.0
    assert config.slos[0].period == 5400.0


@pytest.mark.parametrize("bad", [".nan", ".inf", "-30", "-30s"])
def test_a_route_duration_of_nan_or_below_zero_is_refused_naming_the_key(
    tmp_path: Path, bad: str
) -> None:
    message = _problems(tmp_path, ROUTE + f"  group_wait: {bad}\n")
    assert "route.group_wait" in message and "(accepted: a number of seconds" in message


def test_silence_add_accepts_1h30m(tmp_path: Path) -> None:
    from rmswatch.cli import main

    db = f"sqlite:///{tmp_path / 'store.db'}"
    argv = ["silence", "--db", db, "add", "job=resnet", "--duration", "1h30m"]
    assert main([*argv, "--author", "ana", "--comment", "INC-1"]) == 0
    engine = make_engine(db)
    try:
        [silence] = list_silences(engine)
    finally:
        engine.dispose()
    assert silence.ends_at - silence.starts_at == timedelta(hours=1, minutes=30)


# -- one URL rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://[::1]:9099", "http://[::1]:9099/hook", "https://host", "http://h:8050/x?y=1"]
)
def test_ipv6_literals_and_ordinary_urls_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["http://host:99999", "http://host:0", "host:8050", "ftp://host", "http://", "http://a b"],
)
def test_bad_ports_schemes_and_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="accepted: an absolute http:// or https:// URL"):
        check_url(url)


@pytest.mark.parametrize(
    "template",
    [
        "server:\n  external_url: '{url}'\n",
        "evaluation:\n  runbook_base_url: '{url}'\n",
        "receivers:\n  - {{name: oncall, url: '{url}'}}\n",
    ],
)
def test_external_url_runbooks_and_receivers_share_the_url_rule(
    tmp_path: Path, template: str
) -> None:
    _load(tmp_path, template.format(url="http://[::1]:9099"))
    message = _problems(tmp_path, template.format(url="http://host:99999"))
    assert "Port out of range" in message


# -- one strict base model --------------------------------------------------------------------


def test_config_spec_and_routing_models_share_one_strict_base() -> None:
    from rmswatch.alerting.routing_config import ReceiverConfig, RouteConfig
    from rmswatch.alerting.spec import HealthConfig, SloSpec
    from rmswatch.store.retention_config import RetentionConfig

    for model in (Config, SloSpec, HealthConfig, ReceiverConfig, RouteConfig, RetentionConfig):
        assert issubclass(model, StrictModel)
        assert model.model_config["extra"] == "forbid" and model.model_config["frozen"]


def test_a_validation_error_is_one_line_per_problem_naming_the_key() -> None:
    class Example(StrictModel):
        port: int
        wait: Duration

    with pytest.raises(ValidationError) as caught:
        Example.model_validate({"port": "x", "wait": "soon", "typo": 1})
    assert format_validation_error(caught.value) == [
        "port: Input should be a valid integer, unable to parse string as an integer (got: 'x')",
        "wait: not a duration: 'soon' (accepted: a number of seconds or e.g. 30s, 5m, 1h, 30d, "
        "1h30m, 500ms) (got: 'soon')",
        "typo: unknown key (got: 1)",
    ]


@pytest.mark.parametrize("url", ["http://host:99999", "http://", "http://a b/"])
def test_the_http_shipper_refuses_urls_the_server_config_refuses(url: str) -> None:
    from rmswatch.collectors.http_shipper import HttpShipper

    with pytest.raises(ArgumentError, match="expected the rmswatch server's http"):
        HttpShipper(url, token="t")


def test_the_http_shipper_accepts_an_ipv6_server_url() -> None:
    from rmswatch.collectors.http_shipper import HttpShipper

    shipper = HttpShipper("http://[::1]:8050", token="t")
    assert shipper.url == "http://[::1]:8050/api/v1/ingest"


def _store_writer(**kwargs: object) -> object:
    from rmswatch.collectors.store_writer import StoreWriter

    return StoreWriter(**kwargs)  # type: ignore[arg-type]


def _run_collector(**kwargs: object) -> object:
    from rmswatch.collectors.prometheus.exporter import RunCollector

    return RunCollector(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "kwargs"),
    [
        (_store_writer, {}),
        (_store_writer, {"url": "sqlite://", "max_buffer": 0}),
        (_store_writer, {"url": "sqlite://", "flush_interval": 0}),
        (_run_collector, {"max_layers": -1}),
        (_run_collector, {"layer_depth": 0}),
    ],
)
def test_a_bad_argument_at_a_boundary_is_a_rmswatch_error_and_still_a_value_error(
    build: Callable[..., object], kwargs: dict[str, object]
) -> None:
    with pytest.raises(ArgumentError) as caught:
        build(**kwargs)
    assert isinstance(caught.value, RmswatchError) and isinstance(caught.value, ValueError)
