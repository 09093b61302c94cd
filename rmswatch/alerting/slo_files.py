"""SLO files: rmswatch's own `slos:` list, or OpenSLO v1 `kind: SLO` documents, -> `SloSpec`s.

OpenSLO's good/total counter pairs that name a built-in SLI become that kind; any other pair is a
`ratio` of SLI samples. A bad file raises `ConfigError` naming the file, the document and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from rmswatch._validation import (
    ConfigError,
    PositiveDuration,
    StrictModel,
    format_validation_error,
)
from rmswatch.alerting.spec import SloSpec


class _NativeSloFile(StrictModel):
    slos: tuple[SloSpec, ...]


# OpenSLO good/total metric names -> (SLI kind); a pair not listed is a `ratio` of samples
_OPENSLO_PAIRS: dict[tuple[str, str], str] = {
    ("runs_succeeded", "runs_finished"): "retrain_success",
    ("finite_steps", "steps"): "nonfinite_free_steps",
    ("fast_steps", "steps"): "step_latency",
    ("checkpoint_saves_ok", "checkpoint_saves"): "checkpoint_success",
    ("runs_improved", "runs_validated"): "validation_improvement",
}


class _OsloMetricSpec(StrictModel):
    counter: str
    threshold_seconds: float | None = None


class _OsloMetricSource(StrictModel):
    type: Literal["rmswatch"] = "rmswatch"
    spec: _OsloMetricSpec


class _OsloMetric(StrictModel):
    metricSource: _OsloMetricSource  # noqa: N815 - OpenSLO's spelling


class _OsloRatio(StrictModel):
    counter: bool = True
    good: _OsloMetric
    total: _OsloMetric


class _OsloIndicatorSpec(StrictModel):
    ratioMetric: _OsloRatio  # noqa: N815


class _OsloMetadata(StrictModel):
    name: str
    displayName: str | None = None  # noqa: N815
    labels: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None


class _OsloIndicator(StrictModel):
    metadata: _OsloMetadata
    spec: _OsloIndicatorSpec


class _OsloTimeWindow(StrictModel):
    duration: PositiveDuration
    isRolling: bool = True  # noqa: N815


class _OsloObjective(StrictModel):
    displayName: str | None = None  # noqa: N815
    target: float | None = Field(default=None, gt=0, lt=1)
    targetPercent: float | None = Field(default=None, gt=0, lt=100)  # noqa: N815


class _OsloSpec(StrictModel):
    description: str = ""
    service: str | None = None
    indicator: _OsloIndicator
    timeWindow: tuple[_OsloTimeWindow, ...] = ()  # noqa: N815
    budgetingMethod: Literal["Occurrences"] = "Occurrences"  # noqa: N815
    objectives: tuple[_OsloObjective, ...] = Field(min_length=1, max_length=1)


class _OsloSlo(StrictModel):
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
