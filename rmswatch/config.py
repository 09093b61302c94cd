"""The server's YAML config: typed, validated once at load, never half-read.

`load_config(path)` returns a `Config` or raises `ConfigError` naming the file, the key, the bad
value and what would be accepted. The composition root of the config: each section is defined
next to its owner (alerting specs and routes in `rmswatch.alerting`, retention in `rmswatch.store`,
ingest in `rmswatch.collectors`) and composed here. Imported by `server`, `cli`, alerting and the
generators; nothing below alerting imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from rmswatch._validation import ConfigError as ConfigError
from rmswatch._validation import StrictModel, Url, format_validation_error
from rmswatch.alerting.routing_config import (
    DEFAULT_INHIBIT_RULES,
    InhibitRuleConfig,
    OutboxConfig,
    ReceiverConfig,
    RouteConfig,
    routing_problems,
)
from rmswatch.alerting.slo_files import load_slo_file
from rmswatch.alerting.spec import HealthConfig, SloSpec
from rmswatch.collectors.ingest_config import IngestConfig as IngestConfig
from rmswatch.store.retention_config import RetentionConfig as RetentionConfig


class BasicAuth(StrictModel):
    username: str
    # the password is read from this environment variable, never from the file
    password_env: str = "RMSWATCH_BASIC_AUTH_PASSWORD"


# where a trusted header is believed when `trusted_proxies` is not given: a proxy on this host
LOOPBACK_PROXIES = ("127.0.0.0/8", "::1/128")


def _check_cidr(value: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP network; expected CIDR like 10.0.0.0/8 or 192.168.1.5/32"
        ) from None
    return value


class AuthConfig(StrictModel):
    """Who may see the pages; see docs/operations.md, "Security"."""

    basic: BasicAuth | None = None
    # trust a reverse proxy's authenticated-user header (e.g. X-Forwarded-User) instead
    trusted_header: Annotated[str, Field(min_length=1)] | None = None
    # the header is believed only from these source networks (the proxy's address)
    trusted_proxies: tuple[Annotated[str, AfterValidator(_check_cidr)], ...] | None = None

    @model_validator(mode="after")
    def _header_needs_its_proxies(self) -> AuthConfig:
        if self.trusted_header is None:
            if self.trusted_proxies is not None:
                raise ValueError("trusted_proxies is set but trusted_header is not")
            return self
        if self.trusted_proxies is None:
            if self.basic is not None:
                # with basic auth beside it, anyone reaching the port could send the header
                raise ValueError(
                    f"basic auth with trusted_header {self.trusted_header!r} needs "
                    "trusted_proxies: [CIDR, ...], the reverse proxy's source addresses; "
                    "without it anyone could send the header and skip the password"
                )
            object.__setattr__(self, "trusted_proxies", LOOPBACK_PROXIES)
        elif not self.trusted_proxies:
            raise ValueError("trusted_proxies is empty: name the reverse proxy's networks")
        return self


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    # the externally reachable URL, used in alert dashboard links
    external_url: Url | None = None
    auth: AuthConfig = AuthConfig()
    ingest: IngestConfig = IngestConfig()
    refresh_seconds: float = Field(default=10.0, gt=0)

    def base_url(self) -> str:
        """Where people reach this server: `external_url`, else the bind address."""
        return (self.external_url or f"http://{self.host}:{self.port}").rstrip("/")


class StoreConfig(StrictModel):
    url: str | None = None
    retention: RetentionConfig = RetentionConfig()


class CostConfig(StrictModel):
    gpu_hour_usd: float = Field(default=2.5, ge=0)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping naming the same key twice (YAML says keys are unique;
    PyYAML silently keeps the last, so a second `route:` would quietly replace the first)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1}); YAML keys must be unique",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O, encoding and syntax errors, and duplicate keys, into
    ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not a text file: byte {exc.start} is not UTF-8 (a YAML config is text)"]
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {_yaml_problem(exc)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"top level must be a mapping, not {type(data).__name__}"])
    return data


class EvaluationConfig(StrictModel):
    interval_seconds: float = Field(default=30.0, gt=0)
    # SLO/health evaluation (rmswatch.alerting.evaluate); see docs/alerting.md
    default_slos: bool = True
    slo_files: tuple[str, ...] = ()  # rmswatch or OpenSLO YAML, relative to this file
    runbook_base_url: Url | None = None
    # re-read this much already-evaluated history each tick, for telemetry that arrives late
    lookback_seconds: float = Field(default=300.0, ge=0)


class PrometheusConfig(StrictModel):
    """How Prometheus scrapes the exporter, for `rmswatch rules`: no generated window is shorter
    than `window_floor_scrapes` scrape intervals (a shorter range holds too few samples for
    `increase()`). Default 4 x 15s = 1m."""

    scrape_interval_seconds: float = Field(default=15.0, gt=0)
    window_floor_scrapes: int = Field(default=4, ge=2)

    @property
    def window_floor_seconds(self) -> float:
        return self.scrape_interval_seconds * self.window_floor_scrapes


class Config(StrictModel):
    """The whole server config. Every section has a default, so an empty file is valid."""

    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    cost: CostConfig = CostConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    receivers: tuple[ReceiverConfig, ...] = ()
    route: RouteConfig | None = None
    inhibit_rules: tuple[InhibitRuleConfig, ...] = DEFAULT_INHIBIT_RULES
    outbox: OutboxConfig = OutboxConfig()
    slos: tuple[SloSpec, ...] = ()
    health: HealthConfig = HealthConfig()
    prometheus: PrometheusConfig = PrometheusConfig()

    @model_validator(mode="after")
    def _routes_name_known_receivers(self) -> Config:
        problems = routing_problems(self.receivers, self.route)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def runbook_url(config: Config, name: str) -> str:
    """A runbook's link in alerts: under `evaluation.runbook_base_url` when set, else served by
    this server at /runbooks/ (the runbooks ship inside the package)."""
    base = config.evaluation.runbook_base_url or f"{config.server.base_url()}/runbooks"
    return f"{base.rstrip('/')}/{name}.md"


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file (None: all defaults). Raises ConfigError."""
    if path is None:
        return Config()
    data = read_yaml(path)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), format_validation_error(exc)) from exc
    # SLO files are read now, so a bad one stops the load naming that file
    base = Path(path).parent
    extra = [s for f in config.evaluation.slo_files for s in load_slo_file(base / f)]
    return config.model_copy(update={"slos": (*config.slos, *extra)}) if extra else config
