"""The postmortem of one run, as a self-contained HTML file (Export button and `rmswatch report`).

Everything the report shows comes from `postmortem_data`, which the postmortem page uses too.
Text from the training job is escaped; plotly.js is inlined once so the file opens offline.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from sqlalchemy import Engine

from rmswatch.app import alerts
from rmswatch.app.views import oncall, postmortem
from rmswatch.app.views.common import iso
from rmswatch.store import queries


@dataclass(frozen=True)
class PostmortemData:
    run: dict[str, Any]
    baseline_run_id: str | None
    hyperparameters: pd.DataFrame
    alerts: pd.DataFrame
    spikes: pd.DataFrame
    first_nonfinite: dict[str, Any] | None
    checkpoints: pd.DataFrame
    timeline: pd.DataFrame
    loss_figure: go.Figure
    verdict: str = ""
    firings: pd.DataFrame | None = None


def postmortem_data(engine: Engine, run_id: str) -> PostmortemData | None:
    """Everything the postmortem shows about one run; None when the store has no such run."""
    run = queries.run(engine, run_id)
    if run is None:
        return None
    run_pk = int(run["run_pk"])
    baseline_id = queries.last_good_run(engine, run["job"], run["started_at"], run_id)
    baseline = queries.run(engine, baseline_id) if baseline_id else None
    diff = postmortem.hyperparameter_diff(
        postmortem.flatten_hyperparameters(run.get("hyperparameters")),
        postmortem.flatten_hyperparameters(baseline.get("hyperparameters") if baseline else None),
    )
    steps = queries.step_series(engine, run_pk, [*oncall.STEP_COLUMNS, "time"])
    spikes = postmortem.loss_spikes(steps)
    raised = alerts.run_alerts(engine, run_id)
    firings = alerts.run_firings(engine, run, raised)
    first_bad = queries.first_nonfinite(engine, run_pk)
    checkpoint_rows = queries.checkpoints(engine, run_pk)
    shown = oncall.shown_steps(steps)
    validations = queries.validations(engine, [run_pk])
    figure = oncall.training_figure(
        shown,
        validations,
        oncall.alert_markers(
            raised, queries.steps_at(engine, run_pk, list(raised["starts_at"])), shown
        ),
        title=f"Loss, gradient norm and LR — {run['job']} · {run_id}",
    )
    return PostmortemData(
        run=run,
        baseline_run_id=baseline_id,
        hyperparameters=diff,
        alerts=raised,
        spikes=spikes,
        first_nonfinite=first_bad,
        checkpoints=checkpoint_rows,
        timeline=postmortem.timeline(
            run,
            raised,
            spikes,
            first_bad,
            checkpoint_rows,
            validations,
            steps[["step", "time"]],
            firings=firings,
            lr_changes=oncall.lr_changes(oncall.lr_columns(steps)),
        ),
        loss_figure=figure,
        verdict=postmortem.run_verdict(run, firings),
        firings=firings,
    )


def first_nonfinite_sentence(first_bad: dict[str, Any] | None) -> str:
    if first_bad is None:
        return "No NaN or Inf values were recorded in this run."
    layers = ", ".join(f"{name} ({count})" for name, count in first_bad["layers"])
    kinds = ", ".join(
        f"{k} {first_bad[k]}" for k in ("grad", "param", "state", "loss") if first_bad[k]
    )
    where = f" in {layers}" if layers else ""
    return f"First non-finite step: {first_bad['step']}{where} — {kinds}."


def _table(frame: pd.DataFrame, empty: str) -> str:
    if frame.empty:
        return f"<p class='muted'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _text(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    if value is None or (not isinstance(value, list | dict | tuple) and pd.isna(value)):
        return "—"
    return str(value)


STYLE = """
body{font-family:system-ui,sans-serif;background:#0d1117;color:#f0f6fc;margin:24px;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:26px;color:#c9d1d9}
table{border-collapse:collapse;width:100%;font-size:14px;background:#161b22}
th{text-align:left;color:#9da7b3;border-bottom:1px solid #30363d;padding:6px}
td{border-bottom:1px solid #21262d;padding:6px}.muted{color:#9da7b3}
.headline{font-size:18px;font-weight:700;color:#ff6b6b}.verdict{font-size:18px}
"""


ALERT_REPORT_COLUMNS = ["alertname", "severity", "state", "starts_at", "ends_at", "summary"]


def build_report_html(data: PostmortemData) -> str:
    """The whole report as one HTML document (plotly.js inline; no network needed to open it)."""
    run = data.run
    esc = html.escape
    labels = ", ".join(f"{k}={v}" for k, v in (run.get("labels") or {}).items()) or "—"
    figure_html = data.loss_figure.to_html(full_html=False, include_plotlyjs=True)
    baseline = data.baseline_run_id or "none (no earlier succeeded run of this job)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>rmswatch postmortem — {esc(str(run["run_id"]))}</title><style>{STYLE}</style></head>
<body>
<h1>Postmortem: {esc(str(run["job"]))} · {esc(str(run["run_id"]))}</h1>
<p class="verdict" id="verdict">Verdict: <b>{esc(data.verdict)}</b></p>
<p class="headline" id="first-nonfinite">{esc(first_nonfinite_sentence(data.first_nonfinite))}</p>
<p>Status <b>{esc(str(run.get("status")))}</b> {esc(str(run.get("status_detail") or ""))} ·
started {esc(iso(run.get("started_at")))} · ended {esc(_text(run.get("ended_at")))} ·
last step {esc(_text(run.get("last_step")))} · optimizer {esc(str(run.get("optimizer") or "—"))}
· labels {esc(labels)}</p>
<h2>Timeline</h2>{_table(data.timeline, "nothing recorded")}
<h2>Loss, gradient norm and learning rate</h2>{figure_html}
<h2>Hyperparameters vs last good run ({esc(baseline)})</h2>
{_table(data.hyperparameters, "no hyperparameters recorded")}
<h2>Alerts (summaries as of now; the timeline has each firing as it happened)</h2>
{_table(data.alerts[ALERT_REPORT_COLUMNS], "no alerts were raised for this run")}
<h2>Loss spikes</h2>{_table(data.spikes, "no loss spikes")}
<h2>Checkpoints</h2>{_table(data.checkpoints, "no checkpoint events")}
<p class="muted">Generated by rmswatch report.</p>
</body></html>
"""


def report_command(db_url: str, run_id: str, output: str | None) -> int:
    """`rmswatch report --db URL --run ID [-o FILE]`: write the HTML postmortem of a run.

    Reads only: a missing store is an error, never an empty new one."""
    from rmswatch.store.existing import StoreNotFoundError, open_existing_store

    engine = open_existing_store(db_url, argument="--db")
    try:
        data = postmortem_data(engine, run_id)
        if data is None:
            newest = queries.runs(engine).head(5)["run_id"].tolist()
            known = f"newest runs: {', '.join(newest)}" if newest else "the store has no runs"
            raise StoreNotFoundError(f"--run {run_id!r}: no such run in this store ({known})")
        path = Path(output or f"{run_id}.html")
        path.write_text(build_report_html(data), encoding="utf-8")
        print(f"wrote {path}")
        return 0
    finally:
        engine.dispose()
