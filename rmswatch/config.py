"""The server's YAML config: typed, validated once at load, never half-read.

`load_config(path)` returns a `Config` or raises `ConfigError` naming the file, the key, the bad
value and what would be accepted. Alerting sections (receivers, route, slos, health rules) are
defined in `rmswatch.alerting.spec` and composed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from rmswatch._validation import ConfigError as ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuth(_Strict):
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


class AuthConfig(_Strict):
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


class IngestConfig(_Strict):
    # bearer token for POST /api/v1/ingest, read from this environment variable
    token_env: str = "RMSWATCH_TOKEN"
    max_batch_bytes: int = Field(default=8 * 1024 * 1024, gt=0)


def _check_url(value: str) -> str:
    from rmswatch.alerting.spec import check_url  # the one URL rule, shared with the specs

    return check_url(value)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    # the externally reachable URL, used in alert dashboard links
    external_url: Annotated[str, AfterValidator(_check_url)] | None = None
    auth: AuthConfig = AuthConfig()
    ingest: IngestConfig = IngestConfig()
    refresh_seconds: float = Field(default=10.0, gt=0)

    def base_url(self) -> str:
        """Where people reach this server: `external_url`, else the bind address."""
        return (self.external_url or f"http://{self.host}:{self.port}").rstrip("/")


class RetentionConfig(_Strict):
    # every step's histograms for this long, then every `downsample_every`-th
    full_resolution_hours: float = Field(default=1.0, gt=0)
    downsample_every: int = Field(default=10, ge=1)
    # telemetry older than this is deleted (None keeps everything)
    keep_days: float | None = Field(default=90.0, gt=0)


class StoreConfig(_Strict):
    url: str | None = None
    retention: RetentionConfig = RetentionConfig()


class CostConfig(_Strict):
    gpu_hour_usd: float = Field(default=2.5, ge=0)


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per problem: `key.path: message (got: value)`."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got: {got!r})"
        lines.append(f"{key}: {message}{shown}")
    return lines


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax errors into ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"top level must be a mapping, not {type(data).__name__}"])
    return data


# Imported here, after the shared base types, because the alerting specs build on them.
from rmswatch.alerting.routing_config import (  # noqa: E402
    DEFAULT_INHIBIT_RULES,
    InhibitRuleConfig,
    OutboxConfig,
    ReceiverConfig,
    RouteConfig,
    routing_problems,
)
from rmswatch.alerting.spec import HealthConfig, SloSpec, check_url, load_slo_file  # noqa: E402


class EvaluationConfig(_Strict):
    interval_seconds: float = Field(default=30.0, gt=0)
    # SLO/health evaluation (rmswatch.alerting.evaluate); see docs/alerting.md
    default_slos: bool = True
    slo_files: tuple[str, ...] = ()  # rmswatch or OpenSLO YAML, relative to this file
    runbook_base_url: Annotated[str, AfterValidator(check_url)] | None = None
    # re-read this much already-evaluated history each tick, for telemetry that arrives late
    lookback_seconds: float = Field(default=300.0, ge=0)


class Config(_Strict):
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
