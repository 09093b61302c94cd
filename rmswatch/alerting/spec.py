"""SLO and training-health specs -> typed models (SLO files are read by `slo_files`).

Policy is data: burn-rate windows, default SLOs and default health rules live in
`rmswatch/alerting/data/*.yaml`; this module reads them into frozen pydantic models that refuse
unknown keys, so a typo is an error at load and never a silently ignored setting.
"""

from __future__ import annotations

import fnmatch
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from rmswatch._validation import Duration, PositiveDuration, StrictModel
from rmswatch._validation import format_duration as format_duration

SliKind = Literal[
    "retrain_success",
    "nonfinite_free_steps",
    "step_latency",
    "checkpoint_success",
    "validation_improvement",
    "ratio",
]
PER_STEP_KINDS = frozenset({"nonfinite_free_steps", "step_latency"})
Severity = Literal["page", "ticket"]

# ---------------------------------------------------------------------------- burn-rate policy


class BurnWindow(StrictModel):
    severity: Severity
    long: PositiveDuration
    short: PositiveDuration
    factor: float = Field(gt=0)


class StepWindow(StrictModel):
    severity: Severity
    long_steps: int = Field(gt=0)
    short_steps: int = Field(gt=0)
    factor: float = Field(gt=0)


class BurnPolicy(StrictModel):
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


class SliSpec(StrictModel):
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


class SloSpec(StrictModel):
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


class _Rule(StrictModel):
    enabled: bool = True
    severity: Severity
    runbook: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    for_: Duration = Field(default=0.0, alias="for")

    model_config = ConfigDict(populate_by_name=True)


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


class ResumeMismatchRule(_Rule):
    """Active while a run's newest checkpoint load failed or its resume fidelity mismatched."""


class OptimizerDesyncRule(_Rule):
    """Active while a distributed run's newest cross-rank check found ranks' state differing."""


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
    "resume_mismatch",
    "optimizer_desync",
)


@lru_cache(maxsize=1)
def _health_defaults() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(_data_text("health.yaml"))
    return data


def _default_rule(name: str) -> Any:
    return HealthConfig.model_fields[name].annotation.model_validate(  # type: ignore[union-attr]
        _health_defaults()[name]
    )


class HealthConfig(StrictModel):
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
    resume_mismatch: ResumeMismatchRule = Field(
        default_factory=lambda: _default_rule("resume_mismatch")
    )
    optimizer_desync: OptimizerDesyncRule = Field(
        default_factory=lambda: _default_rule("optimizer_desync")
    )

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


def effective_slos(
    configured: tuple[SloSpec, ...], files: tuple[SloSpec, ...] = (), *, defaults: bool = True
) -> tuple[SloSpec, ...]:
    """Defaults, then the config's SLOs, then SLO files; a later SLO replaces an earlier name."""
    by_name: dict[str, SloSpec] = {}
    for spec in (*(default_slos() if defaults else ()), *configured, *files):
        by_name[spec.name] = spec
    return tuple(by_name.values())
