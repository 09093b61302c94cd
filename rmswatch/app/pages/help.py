"""Help: what the numbers on each page mean, and how production metrics reach rmswatch (kept
here so the manager's view never shows API instructions)."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

dash.register_page(__name__, path="/help", name="Help", order=9, title="rmswatch · help")  # type: ignore[no-untyped-call]

HELP = """
## Executive view

- **Retrain success** — the share of finished retrains that succeeded, as the alerting engine
  counts it for the `retrain-success` SLO.
- **Retrain error budget left** — how many of the failures the SLO allows over its period are
  left. "Spent (3.4× budget)" means 3.4 times the allowed failures happened.
- **Retrains** — every run shown: succeeded, *succeeded with incident* (it finished, but a
  page-severity training alert fired while it ran), failed, running.
- **Val-loss change per retrain (median)** — each succeeded retrain's final validation loss minus
  the previous succeeded retrain's of the same job; negative is better. Outliers (a retrain whose
  change is more than 100 robust spreads from the median, such as a run that diverged) are left
  out of the median and named: read their postmortems.
- **SLO compliance** — the budget left of every SLO per job. A job with fewer events than an SLO
  needs before it may alert reads "too few events" and is not counted as out of budget.

## Production metrics (model drift and other SLIs)

A production monitor posts samples to the server's ingest API with the ingest token:

```
POST /api/v1/ingest
Authorization: Bearer $RMSWATCH_TOKEN
{"version": 1, "items": [{"kind": "sli", "job": "ranker-retrain", "name": "model_drift",
  "value": 0.31, "time": 1767225600, "labels": {"unit": "PSI"}}]}
```

The `unit` label is shown next to the value. A value 1.5× or more its value a week earlier is
called rising.
"""


def layout(**_: Any) -> Any:
    return html.Div([html.H1("Help"), dcc.Markdown(HELP, id="help-text")])
