"""The hand-off between evaluation and lifecycle: one rule's verdict for one label set.

`rmswatch.alerting.evaluate` turns SLO specs and health rules into `Signal`s every tick;
`rmswatch.alerting.lifecycle` turns signals into pending/firing/resolved alerts and notifications.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["page", "ticket"]


@dataclass(frozen=True, slots=True)
class Signal:
    """`active` says whether the condition holds now; `for_seconds` how long it must hold.

    `labels` identify the alert (alertname is added from `alertname`; job, run_id, model,
    cluster and severity are always present, empty when unknown). `annotations` carry summary,
    description, runbook_url and dashboard_url.
    """

    alertname: str
    labels: Mapping[str, str]
    severity: Severity
    active: bool
    value: float | None = None
    for_seconds: float = 0.0
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    """What an evaluation step found about one series, before it becomes a `Signal`: the
    evaluator adds the run's model/cluster labels, the runbook URL and the dashboard link.

    `run` is the run record the finding is about (a dict of `store_inputs.runs`), or None for
    a job-level series with no run yet.
    """

    alertname: str
    severity: Severity
    active: bool
    value: float | None
    job: str
    run_id: str
    run: Mapping[Any, Any] | None
    summary: str
    description: str
    runbook: str
    for_seconds: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
