"""SLO and training-health specs (rmswatch YAML, or an OpenSLO v1 subset) -> typed models.

Policy is data: burn-rate windows, default SLOs and default health rules live in
`rmswatch/alerting/data/*.yaml`; this module reads them into frozen pydantic models that refuse
unknown keys, so a typo is an error at load and never a silently ignored setting.
"""

from __future__ import annotations

import fnmatch
import math
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SliKind = Literal[
    "retrain_success",
    "nonfinite_free_steps",
    "step_latency",
    "checkpoint_success",
    "validation_improvement",
    "ratio",
]
SLI_KINDS: tuple[str, ...] = SliKind.__args__  # type: ignore[attr-defined]
PER_STEP_KINDS = frozenset({"nonfinite_free_steps", "step_latency"})
Severity = Literal["page", "ticket"]

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1h30m', '30d' or a number of seconds -> seconds (float, > 0 not enforced)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 1h, 30d or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value.strip()):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value.strip()))
    else:
        raise ValueError("expected a duration like 30s, 5m, 1h, 30d or a number of seconds")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest Prometheus duration (whole seconds, at least 1s)."""
    whole = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[Duration, Field(gt=0)]

_URL = re.compile(r"^https?://[^\s/?#:]+(:\d{1,5})?(/[^\s]*)?$")


def check_url(value: str) -> str:
    """An absolute http(s) URL, or raise naming what is accepted."""
    if not _URL.match(value):
        raise ValueError("expected an absolute http:// or https:// URL, e.g. https://host:8050")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------- burn-rate policy


class BurnWindow(_Strict):
    severity: Severity
    long: PositiveDuration
    short: PositiveDuration
    factor: float = Field(gt=0)


class StepWindow(_Strict):
    severity: Severity
    long_steps: int = Field(gt=0)
    short_steps: int = Field(gt=0)
    factor: float = Field(gt=0)


class BurnPolicy(_Strict):
    """The windows of `data/burn_rates.yaml`, written for `period`."""

    period: PositiveDuration
    windows: tuple[BurnWindow, ...]
    step_windows: tuple[StepWindow, ...] = ()
    min_events: dict[str, int] = {}

    def scaled(self, period: float) -> tuple[BurnWindow, ...]:
        """The windows for an SLO period: durations scale with period / policy period."""
        ratio = period / self.period
        return tuple(
            w.model_copy(update={"long": w.long * ratio, "short": w.short * ratio})
            for w in self.windows
        )


def _data_text(name: str) -> str:
    return resources.files("rmswatch.alerting").joinpath("data", name).read_text("utf-8")


@lru_cache(maxsize=1)
def burn_policy() -> BurnPolicy:
    """The built-in burn-rate policy (read once; it is package data, not state)."""
    return BurnPolicy.model_validate(yaml.safe_load(_data_text("burn_rates.yaml")))


# ---------------------------------------------------------------------------------------- SLOs


class SliSpec(_Strict):
    """What counts as a good and a total event.

    Built-in kinds read the run store; `ratio` divides two counters posted as SLI samples
    (`good` and `total` are sample names; values are cumulative counters, resets allowed).
    """

    kind: SliKind
    threshold_seconds: float | None = Field(default=None, gt=0)
    good: str | None = None
    total: str | None = None
    # retrain_success: which run statuses count as success / as failure (others are ignored,
    # e.g. a cancelled run is neither)
    good_statuses: tuple[str, ...] = ("succeeded",)
    bad_statuses: tuple[str, ...] = ("failed", "crashed", "stalled")
    # retrain_success: a run closed `succeeded` while a page fired about it ("succeeded with
    # incident") counts as a failure; false counts it by its status alone
    incident_is_bad: bool = True

    @model_validator(mode="after")
    def _kind_needs_its_fields(self) -> SliSpec:
        if self.kind == "step_latency" and self.threshold_seconds is None:
            raise ValueError("threshold_seconds is required when kind is step_latency")
        if self.kind == "ratio" and (not self.good or not self.total):
            raise ValueError("good and total (SLI sample names) are required when kind is ratio")
        if self.kind != "ratio" and (self.good or self.total):
            raise ValueError("good/total are only accepted when kind is ratio")
        return self


class SloSpec(_Strict):
    """One SLO. `objective` is a percentage in (0, 100): write 99.9 for 99.9%.

    Values in (0, 1] are refused: 0.999 is nearly always a ratio written by mistake, and a
    0.999% objective is meaningless. (OpenSLO files use `target: 0.999`, a ratio, as specified
    there.)
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=100)
    description: str = ""
    sli: SliSpec
    objective: float
    period: PositiveDuration = 30 * 86400.0
    # fewest events in the long window before it may alert; None: per-kind default (data file)
    min_events: int | None = Field(default=None, ge=1)
    # fnmatch patterns of jobs this SLO applies to; empty: every job
    jobs: tuple[str, ...] = ()
    # one series per job (all its runs together) or per run
    per: Literal["job", "run"] = "job"
    # also judge per-step SLIs over each running run's last N steps (burn_rates.yaml)
    step_windows: bool = True
    runbook: str | None = None

    @field_validator("objective")
    @classmethod
    def _objective_is_a_percentage(cls, value: float) -> float:
        if not (0 < value < 100) or not math.isfinite(value):
            raise ValueError("objective must be a percentage in (0, 100), e.g. 99.9")
        if value <= 1:
            raise ValueError(
                "objective is a percentage: write 99.9 for 99.9% (a ratio like 0.999 is "
                "refused as ambiguous; OpenSLO files take `target: 0.999`)"
            )
        return value

    @property
    def objective_ratio(self) -> float:
        return self.objective / 100.0

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective_ratio

    @property
    def effective_min_events(self) -> int:
        if self.min_events is not None:
            return self.min_events
        return burn_policy().min_events.get(self.sli.kind, 1)

    def applies_to(self, job: str) -> bool:
        return not self.jobs or any(fnmatch.fnmatchcase(job, p) for p in self.jobs)


@lru_cache(maxsize=1)
def default_slos() -> tuple[SloSpec, ...]:
    data = yaml.safe_load(_data_text("default_slos.yaml"))
    return tuple(SloSpec.model_validate(item) for item in data["slos"])


# ------------------------------------------------------------------------------ health rules


class _Rule(_Strict):
    enabled: bool = True
    severity: Severity
    runbook: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    for_: Duration = Field(default=0.0, alias="for")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NonFiniteRule(_Rule):
    kinds: tuple[Literal["loss", "grad", "param", "state"], ...]
    window_steps: int = Field(ge=1)


class DivergenceRule(_Rule):
    factor: float = Field(gt=1)
    consecutive_steps: int = Field(ge=1)
    median_window_steps: int = Field(ge=1)
    zero_grad_factor: float = Field(default=1.5, gt=1)


class StalledRule(_Rule):
    after: PositiveDuration


class ValidationRegressionRule(_Rule):
    window: int = Field(ge=1)
    tolerance: float = Field(ge=0)
    noise_factor: float = Field(default=3.0, ge=0)


class GradNormVarianceRule(_Rule):
    window_steps: int = Field(ge=2)
    reference_steps: int = Field(ge=2)
    factor: float = Field(gt=1)

    @model_validator(mode="after")
    def _reference_holds_whole_windows(self) -> GradNormVarianceRule:
        if self.reference_steps < 2 * self.window_steps:
            raise ValueError("reference_steps must be at least 2 x window_steps")
        return self


class EffLrJumpRule(_Rule):
    window_steps: int = Field(ge=1)
    factor: float = Field(gt=1)


class CheckpointFailuresRule(_Rule):
    window: PositiveDuration
    min_failures: int = Field(ge=1)


class AmpSkipsRule(_Rule):
    window_steps: int = Field(ge=1)
    min_skipped: int = Field(ge=1)
    min_loss_scale: float = Field(gt=0)


class SlowConvergenceRule(_Rule):
    factor: float = Field(gt=1)
    smooth_steps: int = Field(ge=2)
    min_steps: int = Field(ge=0)
    history_runs: int = Field(ge=1)


class OverspendRule(_Rule):
    factor: float = Field(gt=1)
    history_runs: int = Field(ge=1)


_HEALTH_FIELDS = (
    "nonfinite",
    "divergence",
    "stalled",
    "validation_regression",
    "grad_norm_variance",
    "eff_lr_jump",
    "checkpoint_failures",
    "amp_skips",
    "slow_convergence",
    "overspend",
)


@lru_cache(maxsize=1)
def _health_defaults() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(_data_text("health.yaml"))
    return data


def _default_rule(name: str) -> Any:
    return HealthConfig.model_fields[name].annotation.model_validate(  # type: ignore[union-attr]
        _health_defaults()[name]
    )


class HealthConfig(_Strict):
    """`health:` in the config: each rule's keys override the defaults in data/health.yaml."""

    nonfinite: NonFiniteRule = Field(default_factory=lambda: _default_rule("nonfinite"))
    divergence: DivergenceRule = Field(default_factory=lambda: _default_rule("divergence"))
    stalled: StalledRule = Field(default_factory=lambda: _default_rule("stalled"))
    validation_regression: ValidationRegressionRule = Field(
        default_factory=lambda: _default_rule("validation_regression")
    )
    grad_norm_variance: GradNormVarianceRule = Field(
        default_factory=lambda: _default_rule("grad_norm_variance")
    )
    eff_lr_jump: EffLrJumpRule = Field(default_factory=lambda: _default_rule("eff_lr_jump"))
    checkpoint_failures: CheckpointFailuresRule = Field(
        default_factory=lambda: _default_rule("checkpoint_failures")
    )
    amp_skips: AmpSkipsRule = Field(default_factory=lambda: _default_rule("amp_skips"))
    slow_convergence: SlowConvergenceRule = Field(
        default_factory=lambda: _default_rule("slow_convergence")
    )
    overspend: OverspendRule = Field(default_factory=lambda: _default_rule("overspend"))

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return data  # pydantic reports the wrong type
        merged: dict[str, Any] = {}
        for name, defaults in _health_defaults().items():
            given = data.get(name, {})
            merged[name] = {**defaults, **given} if isinstance(given, dict) else given
        merged.update({k: v for k, v in data.items() if k not in _HEALTH_FIELDS})
        return merged


# ------------------------------------------------------------------------------- SLO files


class _NativeSloFile(_Strict):
    slos: tuple[SloSpec, ...]


# OpenSLO good/total metric names -> (SLI kind); a pair not listed is a `ratio` of samples
_OPENSLO_PAIRS: dict[tuple[str, str], str] = {
    ("runs_succeeded", "runs_finished"): "retrain_success",
    ("finite_steps", "steps"): "nonfinite_free_steps",
    ("fast_steps", "steps"): "step_latency",
    ("checkpoint_saves_ok", "checkpoint_saves"): "checkpoint_success",
    ("runs_improved", "runs_validated"): "validation_improvement",
}


class _OsloMetricSpec(_Strict):
    counter: str
    threshold_seconds: float | None = None


class _OsloMetricSource(_Strict):
    type: Literal["rmswatch"] = "rmswatch"
    spec: _OsloMetricSpec


class _OsloMetric(_Strict):
    metricSource: _OsloMetricSource  # noqa: N815 - OpenSLO's spelling


class _OsloRatio(_Strict):
    counter: bool = True
    good: _OsloMetric
    total: _OsloMetric


class _OsloIndicatorSpec(_Strict):
    ratioMetric: _OsloRatio  # noqa: N815


class _OsloMetadata(_Strict):
    name: str
    displayName: str | None = None  # noqa: N815
    labels: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None


class _OsloIndicator(_Strict):
    metadata: _OsloMetadata
    spec: _OsloIndicatorSpec


class _OsloTimeWindow(_Strict):
    duration: PositiveDuration
    isRolling: bool = True  # noqa: N815


class _OsloObjective(_Strict):
    displayName: str | None = None  # noqa: N815
    target: float | None = Field(default=None, gt=0, lt=1)
    targetPercent: float | None = Field(default=None, gt=0, lt=100)  # noqa: N815


class _OsloSpec(_Strict):
    description: str = ""
    service: str | None = None
    indicator: _OsloIndicator
    timeWindow: tuple[_OsloTimeWindow, ...] = ()  # noqa: N815
    budgetingMethod: Literal["Occurrences"] = "Occurrences"  # noqa: N815
    objectives: tuple[_OsloObjective, ...] = Field(min_length=1, max_length=1)


class _OsloSlo(_Strict):
    apiVersion: Literal["openslo/v1"]  # noqa: N815
    kind: Literal["SLO"]
    metadata: _OsloMetadata
    spec: _OsloSpec

    def to_spec(self) -> SloSpec:
        ratio = self.spec.indicator.spec.ratioMetric
        good = ratio.good.metricSource.spec
        total = ratio.total.metricSource.spec
        kind = _OPENSLO_PAIRS.get((good.counter, total.counter), "ratio")
        sli: dict[str, Any] = {"kind": kind}
        if kind == "ratio":
            sli.update(good=good.counter, total=total.counter)
        if kind == "step_latency":
            sli["threshold_seconds"] = good.threshold_seconds
        objective = self.spec.objectives[0]
        if (objective.target is None) == (objective.targetPercent is None):
            raise ValueError("spec.objectives[0] needs exactly one of target or targetPercent")
        percent = (
            objective.targetPercent
            if objective.targetPercent is not None
            else 100.0 * (objective.target or 0.0)
        )
        spec: dict[str, Any] = {
            "name": self.metadata.name,
            "description": self.spec.description,
            "sli": sli,
            "objective": percent,
        }
        if self.spec.timeWindow:
            spec["period"] = self.spec.timeWindow[0].duration
        if self.spec.service:
            spec["jobs"] = (self.spec.service,)
        return SloSpec.model_validate(spec)


def load_slo_file(path: str | Path) -> tuple[SloSpec, ...]:
    """Read an SLO file: rmswatch's `slos:` list or OpenSLO v1 `kind: SLO` documents.

    Raises ConfigError naming this file and the key.
    """
    from rmswatch.config import ConfigError, format_validation_error

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from exc
    specs: list[SloSpec] = []
    for index, document in enumerate(documents):
        where = f"document {index + 1}: " if len(documents) > 1 else ""
        if not isinstance(document, dict):
            raise ConfigError(str(path), [f"{where}top level must be a mapping"])
        try:
            if "apiVersion" in document:
                specs.append(_OsloSlo.model_validate(document).to_spec())
            else:
                specs.extend(_NativeSloFile.model_validate(document).slos)
        except ValidationError as exc:
            problems = format_validation_error(exc)
            raise ConfigError(str(path), [where + p for p in problems]) from exc
        except ValueError as exc:
            raise ConfigError(str(path), [f"{where}{exc}"]) from exc
    return tuple(specs)


def effective_slos(
    configured: tuple[SloSpec, ...], files: tuple[SloSpec, ...] = (), *, defaults: bool = True
) -> tuple[SloSpec, ...]:
    """Defaults, then the config's SLOs, then SLO files; a later SLO replaces an earlier name."""
    by_name: dict[str, SloSpec] = {}
    for spec in (*(default_slos() if defaults else ()), *configured, *files):
        by_name[spec.name] = spec
    return tuple(by_name.values())
