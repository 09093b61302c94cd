"""The hand-off between evaluation and lifecycle: one rule's verdict for one label set.

`rmswatch.alerting.evaluate` turns SLO specs and health rules into `Signal`s every tick;
`rmswatch.alerting.lifecycle` turns signals into pending/firing/resolved alerts and notifications.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
